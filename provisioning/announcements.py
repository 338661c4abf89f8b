"""Announcing a routing-relevant catalog change: drop the shared (Redis) copy, then publish, so
every router process drops its local copy at once. Used by the control plane and the provisioner
after they commit; best effort (a router's TTL is the backstop while Redis is down)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from contracts.channels import (
    INVALIDATION_CHANNEL,
    alias_redis_key,
    placement_redis_key,
)

log = logging.getLogger("tenantplane.invalidation")


async def announce_placement_change(redis: Any, tenant_id: object,
                                    aliases: Iterable[tuple[str, str]] = ()) -> None:
    if redis is None:
        return
    try:
        keys = [placement_redis_key(tenant_id), *(alias_redis_key(kind, value) for kind, value in aliases)]
        async with redis.pipeline(transaction=False) as pipe:  # one round trip, in this order
            pipe.delete(*keys)
            pipe.publish(INVALIDATION_CHANNEL, str(tenant_id))
            await pipe.execute()
    except Exception as exc:  # Redis down must not fail the change that was already committed
        log.warning("could not announce placement change for %s: %s", tenant_id, type(exc).__name__)


class BatchedAnnouncements:
    """Announcements gathered for up to `window` seconds and sent in one pipeline: a worker ends
    many operations a second during a fleet migration, each one an announcement. `announce()`
    returns once the pipeline that carries its announcement was sent (a move removes the old copy
    only after routers were told), so it costs its caller at most `window` more than sending alone."""

    def __init__(self, redis: Any, window: float = 0.002) -> None:
        self.redis, self.window = redis, window
        self._pending: list[tuple[object, tuple[tuple[str, str], ...]]] = []
        self._sent: asyncio.Future | None = None
        self._sending: set[asyncio.Task] = set()

    async def announce(self, tenant_id: object, aliases: Iterable[tuple[str, str]] = ()) -> None:
        if self.redis is None:
            return
        self._pending.append((tenant_id, tuple(aliases)))
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_later(self.window, self._send_pending)
        await asyncio.shield(self._sent)

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        sent, self._sent = self._sent, None
        task = asyncio.ensure_future(self._send(pending, sent))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, pending: list[tuple[object, tuple[tuple[str, str], ...]]], sent: asyncio.Future | None) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:  # one round trip: every delete, then every publish
                for tenant_id, aliases in pending:
                    pipe.delete(placement_redis_key(tenant_id), *(alias_redis_key(k, v) for k, v in aliases))
                for tenant_id, _ in pending:
                    pipe.publish(INVALIDATION_CHANNEL, str(tenant_id))
                await pipe.execute()
        except Exception as exc:  # Redis down must not fail the changes that were already committed
            log.warning("could not announce placement changes for %d tenant(s): %s", len(pending), type(exc).__name__)
        finally:
            if sent is not None and not sent.done():
                sent.set_result(None)

    async def aclose(self) -> None:
        """Send what is pending now and wait for every send under way."""
        if self._sent is not None:
            self._send_pending()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
