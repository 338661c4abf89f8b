"""Worker processes SIGKILLed with an announcement not sent lose nothing: one that could not
announce (Redis stopped) left it in the catalog's outbox, one killed between an operation's commit
and its announcement left the row the commit wrote; another worker process publishes either.
(Before the outbox, both were lost with the process: routers waited for their TTLs.)"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import redis.asyncio as aioredis

from contracts.channels import INVALIDATION_CHANNEL
from provisioning.announcement_outbox import GRACE_SECONDS
from tests.conftest import admin_client, create_active_tenant, make_stack, stop_process, unique_slug
from tests.provisioning.test_announcement_outbox import own_redis  # noqa: F401 (a fixture)
from tests.provisioning.test_crash_recovery import sigkill, wait_paused

WORKER_ENV = {"REDIS_TIMEOUT_SECONDS": "0.5", "SPARE_DATABASES": "0"}


async def _outbox_rows(catalog: asyncpg.Pool, tenant_id: str) -> int:
    return await catalog.fetchval("SELECT count(*) FROM announcement_outbox WHERE tenant_id = $1::uuid", tenant_id)


async def test_a_worker_killed_with_an_announcement_waiting_leaves_it_for_the_next_worker(pg, own_redis):  # noqa: F811
    stack = await make_stack(pg, own_redis.url, "catalog_outbox_crash")
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    first = stack.start_worker(**WORKER_ENV)
    second = None
    try:
        async with admin_client(stack) as api:
            await create_active_tenant(api)  # the template made while Redis still answers
            own_redis.stop()
            # the create's end is announced by the worker that ran it, after its commit: Redis
            # refuses it, so it goes to the outbox
            tenant = await create_active_tenant(api)
        deadline = time.monotonic() + 30
        while await _outbox_rows(catalog, tenant["id"]) == 0:
            assert time.monotonic() < deadline, "the worker's announcement never reached the outbox"
            await asyncio.sleep(0.1)
        sigkill(first)

        own_redis.start()  # the same port, empty
        listener = aioredis.from_url(own_redis.url)
        pubsub = listener.pubsub()
        await pubsub.subscribe(INVALIDATION_CHANNEL)
        await pubsub.get_message(timeout=1)
        try:
            second = stack.start_worker(**WORKER_ENV)
            heard: set[str] = set()
            deadline = time.monotonic() + 30
            while tenant["id"] not in heard:
                assert time.monotonic() < deadline, "the next worker never delivered the announcement"
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message:
                    heard.add(message["data"].decode())
        finally:
            await pubsub.aclose()
            await listener.aclose()
        deadline = time.monotonic() + 5  # deleted in the transaction that published it
        while await catalog.fetchval("SELECT count(*) FROM announcement_outbox"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        if first.poll() is None:
            sigkill(first)
        if second is not None:
            stop_process(second)
        await catalog.close()


async def test_a_worker_killed_between_an_operations_commit_and_its_announcement_leaves_the_row(pg, own_redis):  # noqa: F811
    stack = await make_stack(pg, own_redis.url, "catalog_outbox_crash_finish")
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    first = stack.start_worker(capture=True, TENANTPLANE_TEST_PAUSE_BEFORE_STEP="after:finish", **WORKER_ENV)
    second = None
    listener = aioredis.from_url(own_redis.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(INVALIDATION_CHANNEL)
    await pubsub.get_message(timeout=1)
    try:
        async with admin_client(stack) as api:
            r = await api.post("/v1/tenants", json={"slug": unique_slug("ob"), "name": "Test", "tier": "dedicated"})
            assert r.status_code == 202, r.text
            tenant_id = r.json()["tenant"]["id"]
            await wait_paused(first, "after:finish")
            sigkill(first)
            assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "active"  # committed
        assert await _outbox_rows(catalog, tenant_id) == 1  # written by the commit, never sent
        second = stack.start_worker(**WORKER_ENV)
        heard: set[str] = set()
        deadline = time.monotonic() + GRACE_SECONDS + 15  # its dead process's grace first
        while tenant_id not in heard:
            assert time.monotonic() < deadline, "the next worker never delivered the announcement"
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message:
                heard.add(message["data"].decode())
        deadline = time.monotonic() + 5
        while await _outbox_rows(catalog, tenant_id):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await pubsub.aclose()
        await listener.aclose()
        if first.poll() is None:
            sigkill(first)
        if second is not None:
            stop_process(second)
        await catalog.close()
