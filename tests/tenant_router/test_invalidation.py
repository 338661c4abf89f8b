"""Announcing placement changes: batched announcements go out in one Redis round trip, each
caller returns only once its own announcement was sent, and Redis being down fails nobody."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import redis.asyncio as aioredis

from contracts.channels import (
    INVALIDATION_CHANNEL,
    alias_redis_key,
    placement_redis_key,
)
from provisioning.announcements import BatchedAnnouncements


class CountingRedis:
    """A real client that counts the pipelines it opens."""

    def __init__(self, client) -> None:
        self.client, self.pipelines = client, 0

    def pipeline(self, *args, **kwargs):
        self.pipelines += 1
        return self.client.pipeline(*args, **kwargs)


async def test_announcements_made_together_go_out_in_one_round_trip(redis_server):
    client = aioredis.from_url(redis_server.url)
    listener = aioredis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(INVALIDATION_CHANNEL)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        tenants = [uuid.uuid4() for _ in range(20)]
        for tenant_id in tenants:
            await client.set(placement_redis_key(tenant_id), "cached")
        await client.set(alias_redis_key("domain", "shop.example.com"), "cached")
        counting = CountingRedis(client)
        announcements = BatchedAnnouncements(counting, window=0.01)

        async def one(tenant_id):
            aliases = [("domain", "shop.example.com")] if tenant_id == tenants[0] else []
            await announcements.announce(tenant_id, aliases)
            # returned: its shared copy is gone already
            assert await client.exists(placement_redis_key(tenant_id)) == 0

        await asyncio.gather(*(one(t) for t in tenants))
        assert counting.pipelines == 1
        assert await client.exists(alias_redis_key("domain", "shop.example.com")) == 0
        heard = set()
        deadline = time.monotonic() + 5
        while len(heard) < len(tenants) and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message:
                heard.add(message["data"].decode())
        assert heard == {str(t) for t in tenants}

        await announcements.announce(tenants[0])  # later: a batch of its own
        assert counting.pipelines == 2
        await announcements.aclose()
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()


async def test_redis_down_fails_no_announcement():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    announcements = BatchedAnnouncements(client)
    try:
        started = time.monotonic()
        await asyncio.gather(*(announcements.announce(uuid.uuid4()) for _ in range(3)))
        assert time.monotonic() - started < 5
    finally:
        await announcements.aclose()
        await client.aclose()


async def test_without_redis_nothing_is_sent():
    await BatchedAnnouncements(None).announce(uuid.uuid4())
