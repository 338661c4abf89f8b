"""PoolRegistry against a real server: budgets, caps, eviction, clean release, cancellation."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from contracts import identifiers
from contracts.placement import PoolKey
from tenant_router.errors import PoolExhausted
from tenant_router.pools import PoolRegistry
from tests.conftest import Stack, create_active_tenant


def key_for(stack: Stack, tenant: dict) -> PoolKey:
    return PoolKey(host="127.0.0.1", port=stack.pg.port, database=identifiers.tenant_database(tenant["id"]),
                   role=identifiers.tenant_role(tenant["id"]), version=1)


@pytest.fixture(scope="module")
async def tenants(api) -> list[dict]:
    return [await create_active_tenant(api) for _ in range(6)]


async def tenant_backends(stack: Stack, tenants: list[dict]) -> int:
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        return await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = ANY($1::text[])",
                                    [identifiers.tenant_role(t["id"]) for t in tenants])
    finally:
        await admin.close()


async def test_the_sum_of_all_pools_stays_within_the_server_budget(stack: Stack, tenants):
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=3, acquire_timeout=10)
    peak = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, await tenant_backends(stack, tenants))
            await asyncio.sleep(0.01)

    async def request(i: int) -> int:
        async with registry.connection(key_for(stack, tenants[i % len(tenants)]), server_budget=4) as conn:
            await asyncio.sleep(0.02)
            return await conn.fetchval("SELECT 1")

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(*(request(i) for i in range(60)))
    finally:
        stop.set()
        await sampler
        stats = registry.stats()
        await registry.close()
    assert results == [1] * 60
    assert peak <= 4
    server = stats["servers"][f"127.0.0.1:{stack.pg.port}"]
    assert server["peak"] <= 4 and server["waits"] > 0
    assert stats["connects"] > 4  # slots moved between tenants: six tenants served on four


async def test_a_full_budget_waits_then_answers_pool_exhausted(stack: Stack, tenants):
    registry = PoolRegistry(stack.settings.secret_key, acquire_timeout=0.3)
    a, b = key_for(stack, tenants[0]), key_for(stack, tenants[1])
    try:
        async with registry.connection(a, server_budget=1):
            with pytest.raises(PoolExhausted):
                async with registry.connection(b, server_budget=1):
                    pass
        # a's pool is idle now: b evicts it and gets the slot
        async with registry.connection(b, server_budget=1) as conn:
            assert await conn.fetchval("SELECT current_user") == b.role
    finally:
        await registry.close()


async def test_one_tenant_cannot_take_more_than_its_cap(stack: Stack, tenants):
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=2, acquire_timeout=0.3)
    a, b = key_for(stack, tenants[2]), key_for(stack, tenants[3])
    try:
        async with registry.connection(a, 50), registry.connection(a, 50):
            with pytest.raises(PoolExhausted):
                async with registry.connection(a, 50):
                    pass
            async with registry.connection(b, 50) as conn:  # another tenant is not affected
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        await registry.close()


async def test_a_connection_goes_back_clean(stack: Stack, tenants):
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    key = key_for(stack, tenants[4])
    try:
        async with registry.connection(key, 50) as conn:
            pid = conn.get_server_pid()
            await conn.execute("SET application_name = 'dirty'; SET search_path = pg_catalog")
            await conn.execute("CREATE TEMP TABLE leftover (x int); PREPARE sneaky AS SELECT 42")
            await conn.execute("LISTEN somewhere; SELECT pg_advisory_lock(4242)")
        async with registry.connection(key, 50) as conn:
            assert conn.get_server_pid() == pid  # the same connection, borrowed again
            assert await conn.fetchval("SHOW application_name") == ""
            assert await conn.fetchval("SHOW search_path") == '"$user", public'
            assert await conn.fetchval("SELECT to_regclass('pg_temp.leftover')") is None
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE from_sql") == 0
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND pid = pg_backend_pid()") == 0
    finally:
        await registry.close()


async def test_a_task_cancelled_mid_transaction_returns_nothing_dirty(stack: Stack, tenants):
    from contracts.placement import Placement, TenantStatus, Tier
    from tenant_router.binding import tenant_transaction

    tenant = tenants[5]
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    key = key_for(stack, tenant)
    placement = Placement(tenant_id=tenant["id"], slug=tenant["slug"], status=TenantStatus.active,
                          tier=Tier.dedicated, server_id=None, host=key.host, port=key.port,
                          database=key.database, role=key.role, schema=None, version=1)
    inserted = asyncio.Event()

    async def interrupted() -> None:
        async with tenant_transaction(registry, placement) as conn:
            await conn.execute("INSERT INTO projects (name) VALUES ('never committed')")
            await conn.execute("SET LOCAL application_name = 'mid-transaction'")
            inserted.set()
            await conn.execute("SELECT pg_sleep(30)")

    try:
        task = asyncio.create_task(interrupted())
        await inserted.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with tenant_transaction(registry, placement) as conn:
            assert await conn.fetchval("SELECT count(*) FROM projects WHERE name = 'never committed'") == 0
            assert await conn.fetchval("SHOW application_name") == ""
    finally:
        await registry.close()


async def test_idle_connections_and_pools_are_closed(stack: Stack, tenants):
    registry = PoolRegistry(stack.settings.secret_key, pool_idle_seconds=0.2, connection_idle_seconds=0.1)
    key = key_for(stack, tenants[0])
    sweeper = asyncio.create_task(registry.run_sweeper())
    try:
        async with registry.connection(key, 50), registry.connection(key, 50):
            pass
        server = f"127.0.0.1:{stack.pg.port}"
        assert registry.stats()["servers"][server]["open"] == 2 and len(registry) == 1
        deadline = asyncio.get_running_loop().time() + 5
        while len(registry) or registry.stats()["servers"][server]["open"]:
            assert asyncio.get_running_loop().time() < deadline, registry.stats()
            await asyncio.sleep(0.05)
        while await tenant_backends(stack, [tenants[0]]):  # the server notices the goodbye a moment later
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        sweeper.cancel()
        await registry.close()
