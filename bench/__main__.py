"""`python -m bench [throughput|cold_warm|over_budget ...]`: run the benchmarks (all by
default), print each figure and a table, and write bench/results.json."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable

from bench import backups, billing, cold_warm, moves, orm_throughput, over_budget, provisioning, throughput
from bench.results import RESULTS_PATH, Report

BENCHMARKS: dict[str, Callable[[Report], Awaitable[None]]] = {
    "throughput": throughput.run,    # routed_vs_fixed_throughput, placement_*
    "orm_throughput": orm_throughput.run,  # orm_routed_vs_fixed_throughput (tenant_sqlalchemy)
    "cold_warm": cold_warm.run,      # cold_vs_warm_p50
    "over_budget": over_budget.run,  # over_budget_*
    "provisioning": provisioning.run,      # provision_vs_template_create, provision_vs_replay
    "fanout": provisioning.run_fanout,     # fanout_vs_serial, fanout_noop_ms_per_tenant
    "moves": moves.run,                    # move_write_pause_s
    "billing": billing.run,                # webhook_p99_ms, webhook_events_per_s
    "backups": backups.run,                # backup_vs_pg_dump, restore_vs_pg_restore, backup_rss_growth, *_mb_per_s
}


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    # Warnings only. Per-request lines (the router's access log, httpx's request log) would measure
    # how fast this terminal scrolls; the router still does all its other per-request work (metrics).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "tenantplane.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # platformdirs, via pgserver
    report = Report()
    for name in argv or list(BENCHMARKS):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            asyncio.run(BENCHMARKS[name](report))
        except Exception as exc:  # the other benchmarks still run; the exit status says it
            traceback.print_exc()
            report.errors[name] = f"{type(exc).__name__}: {exc}"
        print(f"   ({name}: {time.monotonic() - started:.0f} s)", flush=True)
        report.write()  # after each benchmark, so a later crash keeps what was measured
    print()
    print(report.table())
    print(f"\nwritten to {RESULTS_PATH}")
    if report.errors:
        print(f"crashed: {', '.join(report.errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
