"""cold_vs_warm_p50: the first request of a tenant that has no pool, against warm requests.

One request at a time (latency, not queueing). The app itself is warmed first on one tenant, so
one-off costs of the process (first route resolution, first catalog query) land on no sample.
Then, for each other tenant in turn:

- even tenants are fully cold: no cached placement and no pool (directory miss -> Redis miss ->
  catalog, then a new connection: TCP + SCRAM + backend start, then the query);
- odd tenants have their placement looked up first, untimed: only the pool is cold;
- then WARM_PER_TENANT warm requests to the same tenant (a cached placement, an idle connection).

`cold_vs_warm_p50` = p50 of the fully cold requests / p50 of all warm requests.
"""

from __future__ import annotations

import time

from bench.apps import routed_app, router_of
from bench.fleet import build_fleet
from bench.load import asgi_client, percentile
from bench.results import Report, at_most, info
from bench.stack import bench_stack
from tenant_router.resolution import TenantKey

TENANTS = 41  # one to warm the app, 20 fully cold, 20 pool-cold
APP_WARMUP = 200
WARM_PER_TENANT = 20
MAX_SECONDS = 120.0


async def run(report: Report) -> None:
    async with bench_stack("coldwarm", max_connections=100, capacity_connections=90) as stack:
        fleet = await build_fleet(stack, TENANTS)
        report.add(info("cold_warm_fleet_build_s", round(fleet.build_seconds, 1), "s"))
        app = routed_app(stack.router_config(cache_preload_max=0))  # "no cached placement": no warm start
        cold: list[int] = []
        pool_cold: list[int] = []
        warm: list[int] = []
        async with asgi_client(app) as client:
            router = router_of(app)

            async def timed(host: str) -> int:
                t0 = time.perf_counter_ns()
                response = await client.get("/api/projects", headers={"host": host})
                elapsed = time.perf_counter_ns() - t0
                if response.status_code != 200:
                    raise RuntimeError(f"{host}: {response.status_code} {response.text[:200]}")
                return elapsed

            first, rest = fleet.tenants[0], fleet.tenants[1:]
            for _ in range(APP_WARMUP):
                await timed(first.host)
            deadline = time.monotonic() + MAX_SECONDS
            for i, tenant in enumerate(rest):
                if time.monotonic() > deadline:
                    break
                connects = router.pools.connects
                if i % 2 == 0:
                    cold.append(await timed(tenant.host))
                else:
                    await router.directory.get_placement_cached(TenantKey("slug", tenant.slug))
                    pool_cold.append(await timed(tenant.host))
                if router.pools.connects != connects + 1:  # proves the sample was cold
                    raise RuntimeError(f"{tenant.slug}: the first request did not open a connection")
                for _ in range(WARM_PER_TENANT):
                    warm.append(await timed(tenant.host))
                if router.pools.connects != connects + 1:  # and that the warm ones were warm
                    raise RuntimeError(f"{tenant.slug}: a warm request opened a connection")

    warm_p50 = percentile(warm, 50) / 1e6
    cold_p50 = percentile(cold, 50) / 1e6
    pool_cold_p50 = percentile(pool_cold, 50) / 1e6
    report.add(info("warm_p50_ms", round(warm_p50, 3), "ms", f"{len(warm)} requests"))
    report.add(info("cold_p50_ms", round(cold_p50, 3), "ms", f"{len(cold)} tenants, no placement, no pool"))
    report.add(info("cold_pool_only_p50_ms", round(pool_cold_p50, 3), "ms",
                    f"{len(pool_cold)} tenants, placement cached, no pool"))
    report.add(at_most("cold_vs_warm_p50", round(cold_p50 / warm_p50, 2), 20, "ratio"))
