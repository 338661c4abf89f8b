"""routed_vs_fixed_throughput, and the placement figures measured on the same routed run.

1,000 shared-tier tenants and 50 dedicated tenants on one server, as the issue asks; `GET
/api/projects` with Zipf-distributed tenants (s = 1.1; ranks shuffled over both tiers), through the
routed demo app, against the same handler on one fixed asyncpg pool on one tenant database (the
hottest dedicated tenant's, logged in as its role: no binding statement at all, so the harder
baseline). Rounds alternate the two variants (fixed first, then routed
first, ...) with the same request sequence for both within a round. The ratio is the median of the
per-round ratios (each routed round against its neighbouring fixed round, so that load from other
processes on this shared 2-core machine hits both sides of a ratio alike); absolute throughputs are
medians over rounds. CPU time of this process per request (time.process_time) is reported too: it
is much less sensitive to other processes than wall-clock throughput.

`placement_cache_hit_ratio` is local hits (fresh or stale-while-revalidate) / all lookups
(`Directory.stats()`) over the measured rounds, i.e. in steady state after the warm-up, with the
router as configured by default (it preloads up to 10,000 placements at startup);
`placement_cache_hit_ratio_from_cold` counts the warm-up too; `placement_cache_hit_ratio_no_preload`
is the same steady-state ratio measured by a second routed app with the preload turned off, over
the same request sequences (its rounds are not part of the throughput figures).
`placement_local_hit_p50_us` times `Directory.get_placement_cached()` on keys that are in the
local cache, afterwards, with the event loop otherwise idle.
"""

from __future__ import annotations

import random
import statistics
import time

from bench.apps import fixed_app, fixed_pool, routed_app, router_of
from bench.fleet import build_fleet
from bench.load import LoadResult, asgi_client, percentile, run_load, zipf_sequence
from bench.results import Report, at_least, info
from bench.stack import bench_stack
from tenant_router.resolution import TenantKey

DEDICATED = 50
SHARED = 1_000
TENANTS = DEDICATED + SHARED
# as `make run` registers its embedded server: max_connections 200, capacity_connections 100
MAX_CONNECTIONS = 200
BUDGET = 100
CONCURRENCY = 16  # in-flight requests; enough to keep the (single) event loop saturated
WARMUP_REQUESTS = 3_000
ROUNDS = 5
ROUND_REQUESTS = 3_000
ROUND_SECONDS = 30.0  # bound per round, whatever the request count
LOCAL_HIT_CALLS = 200_000
LOCAL_HIT_BATCH = 100
LOCAL_HIT_SECONDS = 10.0


_COUNTS = ("hits", "stale_hits", "redis_hits", "misses", "coalesced")


def _steady(before: dict, after: dict) -> tuple[float, dict[str, int]]:
    """(local hit ratio, counts) between two `Directory.stats()`."""
    counts = {k: (after.get(k) or 0) - (before.get(k) or 0) for k in _COUNTS}
    return (counts["hits"] + counts["stale_hits"]) / max(sum(counts.values()), 1), counts


async def _steady_hit_ratio_without_preload(stack, hosts) -> tuple[float, dict[str, int]]:
    """The same warm-up and round sequences through a routed app whose router does not preload."""
    app = routed_app(stack.router_config(cache_preload_max=0))
    async with asgi_client(app) as client:
        directory = router_of(app).directory
        await run_load(client, hosts(WARMUP_REQUESTS, 101), concurrency=CONCURRENCY, max_seconds=ROUND_SECONDS)
        before = directory.stats()
        for i in range(ROUNDS):
            await run_load(client, hosts(ROUND_REQUESTS, 200 + i), concurrency=CONCURRENCY, max_seconds=ROUND_SECONDS)
        return _steady(before, directory.stats())


def _check(result: LoadResult, what: str) -> None:
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} of {result.sent} requests failed: {dict(result.statuses)}")


async def _local_hit_us(directory, keys) -> tuple[float, int]:  # (p50 in microseconds, calls)
    """Each sample is one batch of LOCAL_HIT_BATCH awaited calls, timed with perf_counter_ns and
    divided by the batch size (a single ~1 us call is too close to the timer's own cost)."""
    for key in keys:  # make sure every key is a local hit (TTLs may have run out meanwhile)
        await directory.get_placement_cached(key)
    hits_before = directory.counts.hits + directory.counts.stale_hits
    samples: list[float] = []
    calls = 0
    deadline = time.perf_counter() + LOCAL_HIT_SECONDS
    get = directory.get_placement_cached
    while calls < LOCAL_HIT_CALLS and time.perf_counter() < deadline:
        key = keys[len(samples) % len(keys)]
        t0 = time.perf_counter_ns()
        for _ in range(LOCAL_HIT_BATCH):
            await get(key)
        samples.append((time.perf_counter_ns() - t0) / LOCAL_HIT_BATCH)
        calls += LOCAL_HIT_BATCH
    if directory.counts.hits + directory.counts.stale_hits - hits_before != calls:
        raise RuntimeError("placement micro-benchmark: some calls were not local hits")
    return percentile(samples, 50) / 1000, calls


async def run(report: Report) -> None:
    async with bench_stack("throughput", max_connections=MAX_CONNECTIONS, capacity_connections=BUDGET) as stack:
        fleet = await build_fleet(stack, DEDICATED, shared=SHARED)
        report.add(info("throughput_fleet_build_s", round(fleet.build_seconds, 1), "s",
                        f"{DEDICATED} dedicated + {SHARED} shared tenants through TenantService + "
                        "in-process worker (not a routing figure)"))
        ranked = list(fleet.tenants)
        random.Random(7).shuffle(ranked)  # Zipf rank -> tenant
        fixed_tenant = next(t for t in ranked if t.tier == "dedicated")

        def hosts(count: int, seed: int) -> list[str]:
            return [ranked[r].host for r in zipf_sequence(TENANTS, count, seed=seed)]

        pool = await fixed_pool(stack, fixed_tenant, CONCURRENCY)
        try:
            routed = routed_app(stack.router_config())
            async with asgi_client(fixed_app(pool)) as fixed_client, asgi_client(routed) as routed_client:
                router = router_of(routed)
                _check(await run_load(fixed_client, hosts(WARMUP_REQUESTS // 4, 100), concurrency=CONCURRENCY,
                                      max_seconds=ROUND_SECONDS), "fixed warm-up")
                _check(await run_load(routed_client, hosts(WARMUP_REQUESTS, 101), concurrency=CONCURRENCY,
                                      max_seconds=ROUND_SECONDS), "routed warm-up")
                connects_before, reclaims_before = router.pools.connects, router.pools.reclaims
                cold_stats = router.directory.stats()
                fixed_runs: list[LoadResult] = []
                routed_runs: list[LoadResult] = []
                cpu_us: dict[str, list[float]] = {"fixed": [], "routed": []}
                for i in range(ROUNDS):
                    sequence = hosts(ROUND_REQUESTS, 200 + i)
                    variants = [(fixed_client, fixed_runs, "fixed"), (routed_client, routed_runs, "routed")]
                    for client, runs, what in variants if i % 2 == 0 else variants[::-1]:
                        cpu_before = time.process_time()
                        result = await run_load(client, sequence, concurrency=CONCURRENCY, max_seconds=ROUND_SECONDS)
                        cpu_us[what].append((time.process_time() - cpu_before) / max(result.sent, 1) * 1e6)
                        _check(result, f"{what} round {i + 1}")
                        runs.append(result)
                        print(f"    round {i + 1} {what}: {result.throughput:,.0f} req/s, p50 "
                              f"{result.percentile_ms(50):.2f} ms, p99 {result.percentile_ms(99):.2f} ms, "
                              f"{cpu_us[what][-1]:,.0f} us CPU/request", flush=True)
                hit_stats = router.directory.stats()
                pool_stats = router.pools.stats()
                keys = [TenantKey("slug", t.slug) for t in ranked]
                local_hit_us, calls = await _local_hit_us(router.directory, keys)
            no_preload = await _steady_hit_ratio_without_preload(stack, hosts)
        finally:
            await pool.close()

    fixed_rps = statistics.median(r.throughput for r in fixed_runs)
    routed_rps = statistics.median(r.throughput for r in routed_runs)
    ratios = [r.throughput / f.throughput for r, f in zip(routed_runs, fixed_runs)]
    report.add(info("fixed_throughput_rps", round(fixed_rps, 1), "req/s",
                    f"median of {ROUNDS} rounds, {CONCURRENCY} in flight, one pool of {CONCURRENCY}"))
    report.add(info("routed_throughput_rps", round(routed_rps, 1), "req/s",
                    f"median of {ROUNDS} rounds, {CONCURRENCY} in flight, {SHARED} shared + {DEDICATED} dedicated "
                    "tenants, Zipf s=1.1, "
                    f"budget {BUDGET}"))
    report.add(at_least("routed_vs_fixed_throughput", round(statistics.median(ratios), 3), 0.90, "ratio",
                        "median of per-round ratios " + ", ".join(f"{x:.2f}" for x in ratios)))
    fixed_cpu, routed_cpu = statistics.median(cpu_us["fixed"]), statistics.median(cpu_us["routed"])
    report.add(info("fixed_cpu_us_per_request", round(fixed_cpu, 1), "us", "process CPU time, median of rounds"))
    report.add(info("routed_cpu_us_per_request", round(routed_cpu, 1), "us", "process CPU time, median of rounds"))
    report.add(info("routed_vs_fixed_cpu_efficiency", round(fixed_cpu / routed_cpu, 3), "ratio",
                    "fixed CPU / routed CPU per request: what the throughput ratio tends to when this "
                    "process's CPU is the bottleneck and nothing else runs"))
    report.add(info("routed_p50_ms", round(statistics.median(r.percentile_ms(50) for r in routed_runs), 3), "ms"))
    report.add(info("fixed_p50_ms", round(statistics.median(r.percentile_ms(50) for r in fixed_runs), 3), "ms"))
    routed_sent = sum(r.sent for r in routed_runs)
    connects = pool_stats["connects"] - connects_before
    report.add(info("routed_connect_share", round(connects / routed_sent, 4), "ratio",
                    f"{connects} connects / {routed_sent} routed requests after the warm-up; reclaims "
                    f"{pool_stats['reclaims'] - reclaims_before}; {pool_stats['connects']} connects in all"))
    ratio, rounds = _steady(cold_stats, hit_stats)
    report.add(at_least("placement_cache_hit_ratio", round(ratio, 4), 0.99, "ratio",
                        f"measured rounds, {hit_stats['preloaded']} placements preloaded at startup: "
                        + ", ".join(f"{k} {v}" for k, v in rounds.items())))
    report.add(info("placement_cache_hit_ratio_from_cold", round(hit_stats["hit_ratio"], 4), "ratio",
                    "warm-up included: " + ", ".join(f"{k} {hit_stats.get(k)}" for k in _COUNTS)))
    ratio, rounds = no_preload
    report.add(info("placement_cache_hit_ratio_no_preload", round(ratio, 4), "ratio",
                    "measured rounds of a router with cache_preload_max=0: "
                    + ", ".join(f"{k} {v}" for k, v in rounds.items())))
    report.add(info("placement_local_hit_p50_us", round(local_hit_us, 3), "us",
                    f"{calls:,} calls, batches of {LOCAL_HIT_BATCH}"))
