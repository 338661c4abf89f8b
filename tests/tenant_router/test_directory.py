"""The placement directory's caching rules, against the real catalog and Redis: stale answers only
while subscribed to invalidations and only for the stale window, background refreshes, an
invalidation always wins, and the Redis copy outliving the local one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from contracts.channels import placement_redis_key
from provisioning.announcements import announce_placement_change
from tenant_router.directory import Directory
from tenant_router.resolution import TenantKey
from tests.conftest import Stack, create_active_tenant, wait_for

TTL = 0.2


@pytest.fixture
async def catalog(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(stack.settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def listening(directory: Directory, redis_url: str) -> AsyncIterator[None]:
    client = aioredis.from_url(redis_url)
    ready = asyncio.Event()
    task = asyncio.create_task(directory.listen_for_invalidations(client, ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


async def rename(catalog: asyncpg.Pool, tenant_id: str, name: str) -> None:
    """A catalog change behind the control plane's back: nobody announces it (a lost message)."""
    await catalog.execute("UPDATE tenants SET name = $2 WHERE id = $1::uuid", tenant_id, name)


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_an_expired_entry_is_answered_stale_and_refreshed_in_the_background(api, stack: Stack, catalog):
    tenant = await create_active_tenant(api)
    key = TenantKey("slug", tenant["slug"])
    # no Redis copy (only the subscription), so that every refresh reads the catalog
    directory = Directory(catalog, ttl=TTL, negative_ttl=TTL, stale=30)
    async with listening(directory, stack.settings.redis_url):
        first = await directory.get_placement_cached(key)
        assert first is not None and directory.counts.misses == 1
        await rename(catalog, tenant["id"], "Renamed")
        await asyncio.sleep(TTL * 2)

        stale = await directory.get_placement_cached(key)  # answered at once, from the old entry
        assert stale == first and directory.counts.stale_hits == 1
        await until(lambda: directory.counts.refreshes == 1)  # one background lookup, counted apart
        assert directory.counts.misses == 1
        await asyncio.sleep(0.05)
        fresh = await directory.get_placement_cached(key)
        assert fresh is not None and fresh.tenant_id == first.tenant_id and directory.counts.hits >= 1
        assert directory.stats()["hit_ratio"] == pytest.approx(2 / 3)


async def test_without_a_subscription_an_expired_entry_is_looked_up_first(api, catalog):
    tenant = await create_active_tenant(api)
    key = TenantKey("slug", tenant["slug"])
    directory = Directory(catalog, ttl=TTL, negative_ttl=TTL, stale=30)  # no Redis: nothing tells it of changes
    assert await directory.get_placement_cached(key) is not None
    await asyncio.sleep(TTL * 2)
    await directory.get_placement_cached(key)
    assert directory.counts.stale_hits == 0 and directory.counts.misses == 2


async def test_nothing_is_answered_stale_after_the_stale_window(api, stack: Stack, catalog):
    tenant = await create_active_tenant(api)
    key = TenantKey("slug", tenant["slug"])
    directory = Directory(catalog, ttl=TTL, negative_ttl=TTL, stale=TTL)
    async with listening(directory, stack.settings.redis_url):
        await directory.get_placement_cached(key)
        await asyncio.sleep(TTL * 3)  # past TTL + stale window
        await directory.get_placement_cached(key)
        assert directory.counts.stale_hits == 0 and directory.counts.misses == 2


async def test_an_invalidation_is_never_answered_from_a_stale_entry(api, stack: Stack, catalog, redis):
    tenant = await create_active_tenant(api)
    key = TenantKey("slug", tenant["slug"])
    directory = Directory(catalog, ttl=TTL, negative_ttl=TTL, redis=redis, stale=30, redis_ttl=30)
    async with listening(directory, stack.settings.redis_url):
        assert (await directory.get_placement_cached(key)).status.value == "active"
        await asyncio.sleep(TTL * 2)  # expired: a stale answer would be allowed, were it not dropped
        await catalog.execute("UPDATE tenants SET status = 'suspended' WHERE id = $1::uuid", tenant["id"])
        await announce_placement_change(redis, tenant["id"])
        await until(lambda: key not in directory.cache)
        assert (await directory.get_placement_cached(key)).status.value == "suspended"
        assert directory.counts.stale_hits == 0
    await catalog.execute("UPDATE tenants SET status = 'active' WHERE id = $1::uuid", tenant["id"])


async def test_the_redis_copy_outlives_the_local_entry(api, stack: Stack, catalog, redis):
    tenant = await create_active_tenant(api)
    directory = Directory(catalog, ttl=TTL, negative_ttl=TTL, redis=redis, redis_ttl=300)
    placement = await directory.get_placement_cached(TenantKey("slug", tenant["slug"]))
    assert 290 <= await redis.ttl(placement_redis_key(placement.tenant_id)) <= 300

    other = Directory(catalog, ttl=TTL, negative_ttl=TTL, redis=redis, redis_ttl=300)  # another process
    await asyncio.sleep(TTL * 2)
    assert await other.get_placement_cached(TenantKey("slug", tenant["slug"])) == placement
    assert other.counts.redis_hits == 1 and other.counts.misses == 0


async def test_preload_caches_live_tenants_by_slug_id_and_domain(api, stack: Stack, catalog):
    tenant = await create_active_tenant(api)
    domain = f"app.{tenant['slug']}.example.test"
    assert (await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})).status_code == 201
    gone = await create_active_tenant(api)
    assert (await api.delete(f"/v1/tenants/{gone['id']}")).status_code == 202
    await wait_for(api, gone["id"], "deleted")

    directory = Directory(catalog, ttl=30, negative_ttl=1)
    assert await directory.preload(100_000) >= 1
    for key in (TenantKey("slug", tenant["slug"]), TenantKey("id", tenant["id"]), TenantKey("domain", domain)):
        placement = await directory.get_placement_cached(key)
        assert placement is not None and str(placement.tenant_id) == tenant["id"]
    assert directory.counts.misses == 0 and directory.counts.hits == 3
    assert await directory.get_placement_cached(TenantKey("slug", gone["slug"])) is None  # never preloaded
    assert directory.counts.misses == 1

    limited = Directory(catalog, ttl=30, negative_ttl=1)
    assert await limited.preload(1) == 1 and await limited.preload(0) == 0


async def test_an_invalidation_drops_only_that_tenants_keys(api, catalog):
    a, b = await create_active_tenant(api), await create_active_tenant(api)
    directory = Directory(catalog, ttl=30, negative_ttl=30)
    await directory.preload(100_000)
    unknown = TenantKey("slug", "nobody-" + a["slug"])
    assert await directory.get_placement_cached(unknown) is None
    directory.invalidate(a["id"])
    assert TenantKey("slug", a["slug"]) not in directory.cache and TenantKey("id", a["id"]) not in directory.cache
    assert TenantKey("slug", b["slug"]) in directory.cache
    assert unknown not in directory.cache  # "no such tenant" may have changed too


async def test_unknown_names_cannot_fill_the_cache(catalog):
    directory = Directory(catalog, ttl=30, negative_ttl=30)
    directory.cache.max_unknown = 5
    for i in range(23):
        assert await directory.get_placement_cached(TenantKey("slug", f"random-host-{i}")) is None
    assert directory.cache.unknown_count <= 5 and len(directory.cache) <= 5


class CountingCatalog:
    """The real catalog pool, counting the queries the directory sends through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.fetches = pool, 0

    async def fetch(self, *args):
        self.fetches += 1
        return await self.pool.fetch(*args)

    async def fetchrow(self, *args):
        return await self.pool.fetchrow(*args)


async def test_entries_answered_stale_together_are_refreshed_in_one_query(api, stack: Stack, catalog):
    tenants = [await create_active_tenant(api) for _ in range(5)]
    counting = CountingCatalog(catalog)
    directory = Directory(counting, ttl=TTL, negative_ttl=TTL, stale=30)  # type: ignore[arg-type]
    async with listening(directory, stack.settings.redis_url):
        await directory.preload(100_000)
        await asyncio.sleep(TTL * 2)
        before = counting.fetches
        for tenant in tenants:
            assert await directory.get_placement_cached(TenantKey("slug", tenant["slug"])) is not None
        assert directory.counts.stale_hits == 5 and directory.counts.misses == 0
        await until(lambda: directory.counts.refreshes >= 5)
        assert counting.fetches - before == 1
        assert await directory.get_placement_cached(TenantKey("slug", tenants[0]["slug"])) is not None
        assert directory.counts.hits == 1
