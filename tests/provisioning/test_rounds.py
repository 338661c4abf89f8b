"""Fleet-wide rounds: of several workers asking at once exactly one gets a duty's round, and the
next round is had only an interval later; two worker processes store one reconciliation report per
interval between them, not one each."""

from __future__ import annotations

import asyncio

import asyncpg

from provisioning import rounds
from tests.conftest import catalog_pool, make_stack, stop_process


async def test_one_caller_of_many_gets_the_round_then_none_until_the_interval_is_over(pg):
    async with catalog_pool(pg, "catalog_rounds_unit") as pool:
        won = await asyncio.gather(*(rounds.claim(pool, "reconciler", 3600) for _ in range(8)))
        assert sorted(won) == [False] * 7 + [True]
        assert not await rounds.claim(pool, "reconciler", 3600)
        assert await rounds.claim(pool, "retention", 3600)  # each duty has its own round
        await pool.execute("UPDATE duty_rounds SET last_run_at = now() - interval '2 hours'")
        won = await asyncio.gather(*(rounds.claim(pool, "reconciler", 3600) for _ in range(4)))
        assert sorted(won) == [False] * 3 + [True]


async def test_two_workers_reconcile_once_per_interval_between_them(pg, redis_server):
    stack = await make_stack(pg, redis_server.url, "catalog_rounds")
    interval, window = 1.5, 9.0
    env = {"RECONCILE_INTERVAL_SECONDS": str(interval), "SPARE_DATABASES": "0", "BILLING_INTERVAL_SECONDS": "0"}
    workers = [stack.start_worker(**env) for _ in range(2)]
    try:
        conn = await asyncpg.connect(stack.catalog_dsn)
        try:
            # counted from the first report on, so the workers' start-up time does not count
            for _ in range(300):
                first = await conn.fetchval("SELECT min(started_at) FROM reconciliation_reports")
                if first is not None:
                    break
                await asyncio.sleep(0.1)
            assert first is not None, "no worker reconciled"
            await asyncio.sleep(window)
            count = await conn.fetchval(
                "SELECT count(*) FROM reconciliation_reports WHERE started_at < $1::timestamptz + make_interval(secs => $2::float8)",
                first, window)
        finally:
            await conn.close()
    finally:
        for proc in workers:
            stop_process(proc)
    # one round per interval: about window / interval reports (two each interval would be twice that)
    assert 3 <= count <= window / (interval * 0.95) + 1, count
