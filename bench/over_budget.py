"""Over budget: 1,000 dedicated tenants on one server with max_connections=100, and a router
connection budget of 90 (the server's catalog capacity_connections), Zipf-distributed requests.

- over_budget_errors: non-200 answers (and exceptions) over every routed request, warm-up included.
- over_budget_peak_backends: the most backends of tenant roles pg_stat_activity ever showed,
  sampled every ~10 ms from a separate admin connection in a thread of its own (bench/sampler.py),
  for the whole routed run; it must never exceed over_budget_budget.
- over_budget_vs_fixed_throughput: routed throughput / the same handler on one fixed pool (as many
  connections as requests in flight, at most the budget) on one tenant database of the same server.
  The fixed baseline runs first and its pool is closed before the routed run, so its backends
  (a tenant role's too) never count in the routed peak.
- over_budget_p99_ms and over_budget_connect_share (PoolRegistry.connects / requests): over the
  measured routed run, after the warm-up (the steady state, not the initial filling of the budget).

The catalog lives on the same server (as with `make run` and in the tests), so the router's catalog
pool and the sampler share the 10 connections left outside the budget.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

from bench.apps import fixed_app, fixed_pool, routed_app, router_of
from bench.fleet import build_fleet
from bench.load import asgi_client, run_load, zipf_sequence
from bench.results import Report, at_most, info
from bench.sampler import BackendSampler
from bench.stack import bench_stack

# BENCH_OVER_BUDGET_TENANTS=200 makes a quicker run while working on the router (not a result)
TENANTS = int(os.environ.get("BENCH_OVER_BUDGET_TENANTS", "1000"))
MAX_CONNECTIONS = 100
BUDGET = 90
CONCURRENCY = 64
WARMUP_REQUESTS = 3_000
REQUESTS = 8_000
RUN_SECONDS = 90.0  # bound per load run
FIXED_REQUESTS = 6_000


async def _backends_gone(stack, timeout: float = 10.0) -> None:
    import asyncpg

    from bench.sampler import TENANT_BACKENDS

    conn = await asyncpg.connect(stack.pg.dsn())
    try:
        for _ in range(int(timeout / 0.05)):
            if await conn.fetchval(TENANT_BACKENDS) == 0:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("tenant backends are still connected before the routed run")
    finally:
        await conn.close()


async def run(report: Report) -> None:
    async with bench_stack("overbudget", max_connections=MAX_CONNECTIONS, capacity_connections=BUDGET) as stack:
        fleet = await build_fleet(stack, TENANTS, worker_concurrency=8)
        report.add(info("over_budget_fleet_build_s", round(fleet.build_seconds, 1), "s",
                        f"{TENANTS} tenants through TenantService + in-process worker (not a routing figure)"))
        ranked = list(fleet.tenants)
        random.Random(11).shuffle(ranked)

        def hosts(count: int, seed: int) -> list[str]:
            return [ranked[r].host for r in zipf_sequence(TENANTS, count, seed=seed)]

        # the baseline: same handler, one fixed pool on the hottest tenant's database
        pool = await fixed_pool(stack, ranked[0], min(CONCURRENCY, BUDGET))
        try:
            with BackendSampler(stack.pg.dsn()):  # on in both variants: it costs the process a little CPU
                async with asgi_client(fixed_app(pool)) as client:
                    await run_load(client, hosts(1_000, 300), concurrency=CONCURRENCY, max_seconds=RUN_SECONDS)
                    cpu_before = time.process_time()
                    fixed = await run_load(client, hosts(FIXED_REQUESTS, 301), concurrency=CONCURRENCY,
                                           max_seconds=RUN_SECONDS)
                    fixed_cpu = (time.process_time() - cpu_before) / max(fixed.sent, 1) * 1e6
        finally:
            await pool.close()
        if fixed.errors:
            raise RuntimeError(f"fixed baseline: {fixed.errors} errors: {dict(fixed.statuses)}")
        await _backends_gone(stack)

        app = routed_app(stack.router_config())
        with BackendSampler(stack.pg.dsn()) as sampler:
            async with asgi_client(app) as client:
                router = router_of(app)
                warm = await run_load(client, hosts(WARMUP_REQUESTS, 400), concurrency=CONCURRENCY,
                                      max_seconds=RUN_SECONDS)
                connects_before = router.pools.connects
                cpu_before = time.process_time()
                measured = await run_load(client, hosts(REQUESTS, 401), concurrency=CONCURRENCY,
                                          max_seconds=RUN_SECONDS)
                routed_cpu = (time.process_time() - cpu_before) / max(measured.sent, 1) * 1e6
                connects = router.pools.connects - connects_before
                pool_stats = router.pools.stats()
                hit_stats = router.directory.stats()
        if sampler.error is not None or sampler.samples == 0:
            raise RuntimeError("pg_stat_activity was not sampled") from sampler.error

    errors = warm.errors + measured.errors
    statuses = dict(warm.statuses + measured.statuses)
    (server,) = pool_stats["servers"].values()
    report.add(info("over_budget_budget", BUDGET, "connections", f"server max_connections={MAX_CONNECTIONS}"))
    report.add(at_most("over_budget_errors", errors, 0, "requests",
                       f"of {warm.sent + measured.sent}; statuses {statuses}"
                       + (f"; exceptions {dict(warm.exceptions + measured.exceptions)}" if errors else "")))
    report.add(at_most("over_budget_peak_backends", sampler.peak, BUDGET, "backends",
                       f"{sampler.samples} samples of pg_stat_activity; the router's own count peaked at "
                       f"{server['peak']}"))
    report.add(info("over_budget_fixed_throughput_rps", round(fixed.throughput, 1), "req/s",
                    f"one pool of {min(CONCURRENCY, BUDGET)}, {CONCURRENCY} in flight"))
    report.add(info("over_budget_routed_throughput_rps", round(measured.throughput, 1), "req/s",
                    f"{TENANTS} tenants, {CONCURRENCY} in flight, {measured.sent} requests"))
    report.add(info("over_budget_vs_fixed_throughput", round(measured.throughput / fixed.throughput, 3), "ratio",
                    f"process CPU per request: routed {routed_cpu:,.0f} us, fixed {fixed_cpu:,.0f} us "
                    "(the sampler thread included in both)"))
    report.add(info("over_budget_p50_ms", round(measured.percentile_ms(50), 2), "ms"))
    report.add(info("over_budget_p99_ms", round(measured.percentile_ms(99), 2), "ms",
                    f"fixed baseline p99 {fixed.percentile_ms(99):.2f} ms"))
    report.add(info("over_budget_connect_share", round(connects / measured.sent, 4), "ratio",
                    f"{connects} connects / {measured.sent} requests; reclaims {pool_stats['reclaims']}, "
                    f"budget waits {server['waits']} (whole run)"))
    report.add(info("over_budget_placement_hit_ratio", round(hit_stats["hit_ratio"], 4), "ratio",
                    f"{TENANTS} tenants, warm-up included; misses {hit_stats['misses']}"))
