"""Redis that stops answering (the Valkey process frozen with SIGSTOP: connections stay open, no
reply ever comes) neither holds an admin request nor a move; what could not be announced is sent
once Redis answers again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from contracts.channels import INVALIDATION_CHANNEL
from control_plane.embedded import EmbeddedRedis
from tests.conftest import admin_client, create_active_tenant, make_stack, stop_process, wait_for
from tests.provisioning.test_moves import wait_op


@contextmanager
def frozen(server: EmbeddedRedis) -> Iterator[None]:
    os.kill(server._proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server._proc.pid, signal.SIGCONT)


@pytest.fixture()
def own_redis(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_root / f"redis-frozen-{time.monotonic_ns()}").start()
    try:
        yield server
    finally:
        os.kill(server._proc.pid, signal.SIGCONT)
        server.stop()


async def _next_invalidation(pubsub, timeout: float) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            seen.add(message["data"].decode())
        elif seen:
            return seen
    return seen


async def test_admin_writes_and_moves_do_not_wait_for_a_frozen_redis(pg, own_redis):
    stack = await make_stack(pg, own_redis.url, "catalog_redis_frozen")
    stack = type(stack)(settings=msgspec.structs.replace(stack.settings, redis_timeout_seconds=0.5), pg=stack.pg)
    worker = stack.start_worker(REDIS_TIMEOUT_SECONDS="0.5", SPARE_DATABASES="0")
    listener = aioredis.from_url(own_redis.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(INVALIDATION_CHANNEL)
    try:
        async with admin_client(stack) as api:
            tenant = await create_active_tenant(api)
            await _next_invalidation(pubsub, 0.5)  # whatever creation announced
            with frozen(own_redis):
                started = time.monotonic()
                r = await asyncio.wait_for(api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"}), 10)
                assert r.status_code == 200 and time.monotonic() - started < 3, (r.status_code, time.monotonic() - started)
                r = await asyncio.wait_for(api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "active"}), 10)
                assert r.status_code == 200
                # the move's pause announces and its switch announces: neither may wait for Redis
                r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "schema"})
                assert r.status_code == 202, r.text
                op = await wait_op(api, r.json()["operation_id"], timeout=45)
                assert op["state"] == "succeeded", op
                assert (await wait_for(api, tenant["id"], "active"))["tier"] == "schema"
            # Redis answers again: what was not announced is sent by the processes that kept it
            assert tenant["id"] in await _next_invalidation(pubsub, 10)
    finally:
        stop_process(worker)
        await pubsub.aclose()
        await listener.aclose()
