"""The announcement outbox against a real PostgreSQL and a real Valkey that is stopped and started
again: an announcement Redis did not take waits in the catalog (not in memory), goes out once Redis
answers, in the order written, each row once however many workers deliver, and a subscribed router
hears it; a change noted in its own transaction survives a process that dies before sending it, and
is settled when sent; the gauge counts what waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from contracts.channels import INVALIDATION_CHANNEL, alias_redis_key, placement_redis_key
from control_plane.embedded import EmbeddedRedis, free_port
from provisioning import announcement_outbox
from provisioning.announcements import BatchedAnnouncements, redis_client
from provisioning.metrics import WorkerMetrics
from tenant_router.directory import Directory
from tenant_router.resolution import TenantKey
from tests.conftest import admin_client, catalog_pool, create_active_tenant, fresh_catalog, make_stack, stop_process
from tests.tenant_router.test_directory import listening


@pytest.fixture()
def own_redis(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_root / f"redis-outbox-{time.monotonic_ns()}").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
async def catalog(pg) -> AsyncIterator[asyncpg.Pool]:
    async with catalog_pool(pg, f"catalog_outbox_{uuid.uuid4().hex[:8]}") as pool:
        yield pool


async def _rows(catalog: asyncpg.Pool) -> list[tuple[str | None, list]]:
    rows = await catalog.fetch("SELECT tenant_id, aliases::text AS aliases FROM announcement_outbox ORDER BY id")
    return [(str(r["tenant_id"]) if r["tenant_id"] else None, msgspec.json.decode(r["aliases"])) for r in rows]


async def _heard(pubsub, expected: int, timeout: float = 5.0) -> list[str]:
    heard: list[str] = []
    deadline = time.monotonic() + timeout
    while len(heard) < expected and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            heard.append(message["data"].decode())
    await asyncio.sleep(0.2)  # and nothing more comes
    while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1):
        heard.append(message["data"].decode())
    return heard


async def _subscribed(url: str):
    listener = aioredis.from_url(url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(INVALIDATION_CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    return listener, pubsub


async def test_an_announcement_redis_did_not_take_waits_in_the_catalog_until_redis_is_back(own_redis, catalog):
    client = redis_client(own_redis.url, timeout=0.5)
    announcer = BatchedAnnouncements(client, timeout=0.5, outbox=announcement_outbox.CatalogOutbox(catalog))
    tenant = uuid.uuid4()
    try:
        own_redis.stop()
        assert await announcer.announce(tenant, [("domain", "shop.example.com")]) is False
        # in the catalog, not in this process's memory: a process that dies now loses nothing
        assert announcer.kept == 0
        assert await _rows(catalog) == [(str(tenant), [["domain", "shop.example.com"]])]
        with pytest.raises(Exception):  # noqa: B017 (Redis is away: whatever redis-py raises)
            await announcement_outbox.deliver_waiting(catalog, client, timeout=0.5)
        assert await announcement_outbox.waiting(catalog) == 1  # the failed delivery rolled back

        own_redis.start()  # the same port again, empty
        await client.set(placement_redis_key(tenant), "cached")
        await client.set(alias_redis_key("domain", "shop.example.com"), "cached")
        listener, pubsub = await _subscribed(own_redis.url)
        try:
            assert await announcement_outbox.deliver_waiting(catalog, client) == 1
            assert await _heard(pubsub, 1) == [str(tenant)]
        finally:
            await pubsub.aclose()
            await listener.aclose()
        assert await client.exists(placement_redis_key(tenant), alias_redis_key("domain", "shop.example.com")) == 0
        assert await announcement_outbox.waiting(catalog) == 0
        assert await announcement_outbox.deliver_waiting(catalog, client) == 0
    finally:
        await announcer.aclose()
        await client.aclose()


async def test_a_change_noted_in_its_transaction_survives_a_process_that_died_before_sending(own_redis, catalog):
    """The row commits with the change; its process never sends it (killed right after the
    commit). It is its process's during the grace, then the workers'."""
    client = redis_client(own_redis.url)
    tenant = uuid.uuid4()
    async with catalog.acquire() as conn, conn.transaction():
        ids = await announcement_outbox.note(conn, [(tenant, (("slug", "acme"),))], grace=1.0)
    assert len(ids) == 1
    listener, pubsub = await _subscribed(own_redis.url)
    try:
        assert await announcement_outbox.deliver_waiting(catalog, client) == 0  # still its process's
        assert await announcement_outbox.waiting(catalog) == 0
        await asyncio.sleep(1.1)
        assert await announcement_outbox.waiting(catalog) == 1
        assert await announcement_outbox.deliver_waiting(catalog, client) == 1
        assert await _heard(pubsub, 1) == [str(tenant)]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()


async def test_a_noted_change_is_settled_once_sent_and_handed_to_the_workers_when_not(own_redis, catalog):
    client = redis_client(own_redis.url, timeout=0.5)
    announcer = BatchedAnnouncements(client, timeout=0.5, outbox=announcement_outbox.CatalogOutbox(catalog))
    sent, refused = uuid.uuid4(), uuid.uuid4()
    try:
        async with catalog.acquire() as conn, conn.transaction():
            ids = await announcement_outbox.note(conn, [(sent, ())], grace=60)
        assert await announcer.announce(sent, noted=ids) is True
        await announcer.aclose()  # waits for the settle, which runs after the caller got its answer
        assert await _rows(catalog) == []

        async with catalog.acquire() as conn, conn.transaction():
            ids = await announcement_outbox.note(conn, [(refused, ())], grace=60)
        own_redis.stop()
        assert await announcer.announce(refused, noted=ids) is False
        assert announcer.kept == 0 and await _rows(catalog) == [(str(refused), [])]  # one row, not two
        assert await announcement_outbox.waiting(catalog) == 1  # due now, not after its grace
        own_redis.start()
        assert await announcement_outbox.deliver_waiting(catalog, client) == 1
    finally:
        await announcer.aclose()
        await client.aclose()


async def test_many_noted_tenants_refused_by_redis_stay_one_row_each(own_redis, catalog):
    """A plan change announces every tenant on the plan, each noted with the change."""
    client = redis_client(own_redis.url, timeout=0.5)
    announcer = BatchedAnnouncements(client, timeout=0.5, outbox=announcement_outbox.CatalogOutbox(catalog))
    tenants = [uuid.uuid4() for _ in range(3)]
    try:
        async with catalog.acquire() as conn, conn.transaction():
            ids = await announcement_outbox.note(conn, [(t, ()) for t in tenants], grace=60)
        own_redis.stop()
        assert await announcer.announce_many(tenants, noted=ids) is False
        assert sorted(t for t, _ in await _rows(catalog)) == sorted(str(t) for t in tenants)
        assert announcer.kept == 0 and await announcement_outbox.waiting(catalog) == 3
    finally:
        await announcer.aclose()
        await client.aclose()


async def test_waiting_rows_go_out_in_the_order_written_each_tenant_once_per_round(own_redis, catalog):
    client = redis_client(own_redis.url)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await announcement_outbox.keep(catalog, [(a, ()), (b, ())])
    await announcement_outbox.keep(catalog, [(a, (("slug", "acme"),)), (c, ())])
    listener, pubsub = await _subscribed(own_redis.url)
    try:
        await client.set(alias_redis_key("slug", "acme"), "cached")
        assert await announcement_outbox.deliver_waiting(catalog, client) == 4
        assert await _heard(pubsub, 3) == [str(a), str(b), str(c)]
        assert await client.exists(alias_redis_key("slug", "acme")) == 0

        await announcement_outbox.keep(catalog, [(a, ())], broadcast=True)  # "drop everything" owed
        assert await announcement_outbox.deliver_waiting(catalog, client) == 2
        assert await _heard(pubsub, 1) == ["*"]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()


async def test_two_workers_deliver_every_row_once_and_in_order(own_redis, pg):
    dsn = await fresh_catalog(pg, "catalog_outbox_two_workers")
    catalog = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    other = await asyncpg.create_pool(dsn, min_size=1, max_size=2)  # the second worker's own pool
    tenants = [uuid.uuid4() for _ in range(300)]
    for start in range(0, len(tenants), 30):  # written by many processes, one after another
        await announcement_outbox.keep(catalog, [(t, ()) for t in tenants[start:start + 30]])
    clients = [redis_client(own_redis.url), redis_client(own_redis.url)]
    listener, pubsub = await _subscribed(own_redis.url)
    turns_missed = [0, 0]

    async def worker(i: int, pool: asyncpg.Pool) -> None:
        while await announcement_outbox.waiting(pool):
            if await announcement_outbox.deliver_waiting(pool, clients[i], batch=25) is None:
                turns_missed[i] += 1  # the other one holds the turn
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(asyncio.gather(worker(0, catalog), worker(1, other)), 30)
        heard = await _heard(pubsub, len(tenants))
        assert heard == [str(t) for t in tenants]  # each once, in the order written
        assert await announcement_outbox.waiting(catalog) == 0
    finally:
        await pubsub.aclose()
        await listener.aclose()
        for client in clients:
            await client.aclose()
        await other.close()
        await catalog.close()


async def test_the_gauge_counts_the_announcements_waiting(own_redis, catalog):
    metrics = WorkerMetrics()
    client = redis_client(own_redis.url, timeout=0.5)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("tenantplane_worker_announcements_waiting")

    own_redis.stop()
    await announcement_outbox.keep(catalog, [(uuid.uuid4(), ()) for _ in range(3)])
    duty = asyncio.create_task(announcement_outbox.deliver_periodically(
        catalog, client, 0.5, on_waiting=metrics.announcements_waiting.set, interval=0.05))
    try:
        deadline = time.monotonic() + 10
        while gauge() != 3:
            assert time.monotonic() < deadline, gauge()
            await asyncio.sleep(0.05)
        own_redis.start()
        deadline = time.monotonic() + 15  # the duty backs off while Redis was away (at most 10 s)
        while gauge() != 0:
            assert time.monotonic() < deadline, gauge()
            await asyncio.sleep(0.05)
        assert await announcement_outbox.waiting(catalog) == 0
    finally:
        duty.cancel()
        await asyncio.gather(duty, return_exceptions=True)
        await client.aclose()


async def test_a_subscribed_router_hears_what_an_announcer_cut_off_from_redis_left_waiting(pg, own_redis):
    """The change's announcer cannot reach Redis (a partition: connection refused) and is gone
    after it (its row is all it leaves); a worker process that reaches Redis publishes the row, and a
    router that stayed subscribed throughout (so it never resubscribed, which drops everything)
    drops its entry, which it would otherwise keep for its whole TTL."""
    stack = await make_stack(pg, own_redis.url, "catalog_outbox_router")
    worker = stack.start_worker(REDIS_TIMEOUT_SECONDS="0.5", SPARE_DATABASES="0")
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=3)
    try:
        async with admin_client(stack) as api:
            tenant = await create_active_tenant(api)
            r = await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": f"{tenant['slug']}.example.test"})
            assert r.status_code in (200, 201), r.text
        # with Redis answering, the rows the worker's end and the API's write noted are settled
        await _until_empty(catalog, 5)
        key = TenantKey("slug", tenant["slug"])
        directory = Directory(catalog, ttl=300, negative_ttl=1, stale=0)  # only an invalidation drops it
        async with listening(directory, own_redis.url):
            assert (await directory.get_placement_cached(key)).status.value == "active"
            client = redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)  # nobody listens there
            announcer = BatchedAnnouncements(client, timeout=0.5, outbox=announcement_outbox.CatalogOutbox(catalog))
            try:
                async with catalog.acquire() as conn, conn.transaction():
                    await conn.execute("UPDATE tenants SET status = 'suspended' WHERE id = $1::uuid", tenant["id"])
                    noted = await announcement_outbox.note(conn, [(uuid.UUID(tenant["id"]), ())])
                assert await announcer.announce(uuid.UUID(tenant["id"]), noted=noted) is False
                assert announcer.kept == 0  # nothing in memory: only the outbox can send it now
            finally:
                await announcer.aclose()
                await client.aclose()
            deadline = time.monotonic() + 20
            while key in directory.cache:
                assert time.monotonic() < deadline, "the router never heard the waiting announcement"
                await asyncio.sleep(0.05)
            assert directory.invalidations.listening
            assert (await directory.get_placement_cached(key)).status.value == "suspended"
        await _until_empty(catalog, 5)
    finally:
        stop_process(worker)
        await catalog.close()


async def _until_empty(catalog: asyncpg.Pool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await catalog.fetchval("SELECT count(*) FROM announcement_outbox"):
        assert time.monotonic() < deadline, await _rows(catalog)
        await asyncio.sleep(0.05)
