"""orm_routed_vs_fixed_throughput: the SQLAlchemy path (tenant_sqlalchemy) against a fixed engine.

Routed: examples/litestar_sqlalchemy_app.py as shipped (the router's plugin, `provide_session`: an
AsyncSession on the router's tenant connection), over 200 shared-tier and 50 dedicated tenants.
Fixed: the same `list_projects` handler body with its `session` from a plain SQLAlchemy async engine
(asyncpg driver, a pool of CONCURRENCY) on one dedicated tenant's database, logged in as its role,
one transaction per request. What is left between the two is the router's work plus the session
being lent the router's connection (a SAVEPOINT around the session's transaction, statements
prepared per session). Rounds alternate the variants over the same Zipf request sequences, the
ratio is the median of per-round ratios, as in bench/throughput.py. The fleet is smaller than the
asyncpg benchmark's (1,000 shared) to keep the run short; the per-request work is the same.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import AsyncGenerator

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bench.fleet import build_fleet
from bench.load import LoadResult, asgi_client, run_load, zipf_sequence
from bench.results import Report, at_least, info
from bench.stack import bench_stack
from contracts.credentials import role_password

DEDICATED = 50
SHARED = 200
TENANTS = DEDICATED + SHARED
CONCURRENCY = 16
WARMUP_REQUESTS = 2_000
ROUNDS = 5
ROUND_REQUESTS = 2_000
ROUND_SECONDS = 30.0


def _fixed_app(engine):
    from litestar import Litestar, get
    from litestar.di import Provide

    from examples.litestar_sqlalchemy_app import list_projects
    from tenant_router.problems import EXCEPTION_HANDLERS

    async def provide_session() -> AsyncGenerator[AsyncSession, None]:
        async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
            yield session

    return Litestar(route_handlers=[get("/api/projects")(list_projects.fn)],
                    dependencies={"session": Provide(provide_session)},
                    exception_handlers=dict(EXCEPTION_HANDLERS), logging_config=None)  # type: ignore[arg-type]


def _check(result: LoadResult, what: str) -> None:
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} of {result.sent} requests failed: {dict(result.statuses)}")


async def run(report: Report) -> None:
    from examples.litestar_sqlalchemy_app import create_app

    async with bench_stack("orm_throughput", max_connections=200, capacity_connections=100) as stack:
        fleet = await build_fleet(stack, DEDICATED, shared=SHARED)
        ranked = list(fleet.tenants)
        random.Random(7).shuffle(ranked)
        fixed_tenant = next(t for t in ranked if t.tier == "dedicated")

        def hosts(count: int, seed: int) -> list[str]:
            return [ranked[r].host for r in zipf_sequence(TENANTS, count, seed=seed)]

        password = role_password(stack.settings.secret_key, fixed_tenant.role)
        engine = create_async_engine(
            f"postgresql+asyncpg://{fixed_tenant.role}:{password}@127.0.0.1:{stack.pg.port}/{fixed_tenant.database}",
            pool_size=CONCURRENCY, max_overflow=0)
        try:
            async with asgi_client(_fixed_app(engine)) as fixed, asgi_client(create_app(stack.router_config())) as routed:
                _check(await run_load(fixed, hosts(WARMUP_REQUESTS // 4, 100), concurrency=CONCURRENCY,
                                      max_seconds=ROUND_SECONDS), "fixed warm-up")
                _check(await run_load(routed, hosts(WARMUP_REQUESTS, 101), concurrency=CONCURRENCY,
                                      max_seconds=ROUND_SECONDS), "routed warm-up")
                runs: dict[str, list[LoadResult]] = {"fixed": [], "routed": []}
                cpu_us: dict[str, list[float]] = {"fixed": [], "routed": []}
                for i in range(ROUNDS):
                    sequence = hosts(ROUND_REQUESTS, 200 + i)
                    variants = [(fixed, "fixed"), (routed, "routed")]
                    for client, what in variants if i % 2 == 0 else variants[::-1]:
                        cpu_before = time.process_time()
                        result = await run_load(client, sequence, concurrency=CONCURRENCY, max_seconds=ROUND_SECONDS)
                        cpu_us[what].append((time.process_time() - cpu_before) / max(result.sent, 1) * 1e6)
                        _check(result, f"orm {what} round {i + 1}")
                        runs[what].append(result)
                        print(f"    round {i + 1} orm {what}: {result.throughput:,.0f} req/s, "
                              f"p50 {result.percentile_ms(50):.2f} ms, {cpu_us[what][-1]:,.0f} us CPU/request", flush=True)
        finally:
            await engine.dispose()

    ratios = [r.throughput / f.throughput for r, f in zip(runs["routed"], runs["fixed"])]
    report.add(info("orm_fixed_throughput_rps", round(statistics.median(r.throughput for r in runs["fixed"]), 1),
                    "req/s", f"median of {ROUNDS} rounds, one SQLAlchemy engine (pool {CONCURRENCY})"))
    report.add(info("orm_routed_throughput_rps", round(statistics.median(r.throughput for r in runs["routed"]), 1),
                    "req/s", f"median of {ROUNDS} rounds, {SHARED} shared + {DEDICATED} dedicated tenants, Zipf s=1.1"))
    report.add(at_least("orm_routed_vs_fixed_throughput", round(statistics.median(ratios), 3), 0.90, "ratio",
                        "median of per-round ratios " + ", ".join(f"{x:.2f}" for x in ratios)))
    fixed_cpu, routed_cpu = statistics.median(cpu_us["fixed"]), statistics.median(cpu_us["routed"])
    report.add(info("orm_routed_vs_fixed_cpu_efficiency", round(fixed_cpu / routed_cpu, 3), "ratio",
                    f"fixed {fixed_cpu:,.0f} us / routed {routed_cpu:,.0f} us of process CPU per request"))
