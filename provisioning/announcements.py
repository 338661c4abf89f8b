"""Announcing a routing-relevant catalog change: drop the shared (Redis) copy, then publish, so
every router process drops its local copy at once. Used by the control plane and the provisioner
after they commit.

Redis is never waited on for long: every send is bounded by `timeout` (the change is already
committed, and an admin request or a move's pause must not wait for Redis). An announcement that
could not be sent is written to the catalog's announcement outbox (`outbox`, see
provisioning/announcement_outbox.py), from which the workers publish it once Redis answers, so it
outlives the process that made it. Only when the catalog cannot take it either is it kept in memory
and sent again in the background with a growing pause (moved to the outbox at the next failure
that the catalog takes); at most MAX_KEPT tenants are kept, past that one "drop everything"
broadcast is sent instead (the routers' shared copies then expire at their Redis TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from contracts.channels import (
    INVALIDATION_CHANNEL,
    alias_redis_key,
    placement_redis_key,
)

log = logging.getLogger("tenantplane.invalidation")

DEFAULT_TIMEOUT = 2.0  # seconds one send may take (REDIS_TIMEOUT_SECONDS)
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between resends of kept announcements, doubling
MAX_KEPT = 10_000  # tenants kept for a resend; past this, one "*" broadcast stands for all of them
BROADCAST_ABOVE = 500  # past this many tenants in one send, "*" is cheaper than one message each

Item = tuple[object, tuple[tuple[str, str], ...]]  # tenant id, its aliases (kind, value)
# writes what could not be sent to the catalog's outbox (items, broadcast); raises when it cannot
Outbox = Callable[[Sequence[Item], bool], Awaitable[None]]


def redis_client(url: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A Redis client whose connects and replies are bounded by `timeout` (redis-py waits forever
    on a server that accepted the connection and stopped answering)."""
    import redis.asyncio as aioredis

    return aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


async def send(redis: Any, items: Sequence[Item], broadcast: bool, timeout: float) -> None:
    """One bounded round trip: every item's shared copies deleted, then each tenant (or "*") published."""
    async with asyncio.timeout(timeout):
        async with redis.pipeline(transaction=False) as pipe:  # one round trip: every delete, then every publish
            for tenant_id, aliases in items:
                pipe.delete(placement_redis_key(tenant_id), *(alias_redis_key(k, v) for k, v in aliases))
            if broadcast:
                pipe.publish(INVALIDATION_CHANNEL, "*")
            else:
                for tenant_id, _ in items:
                    pipe.publish(INVALIDATION_CHANNEL, str(tenant_id))
            await pipe.execute()


async def _to_outbox(outbox: Outbox | None, items: Sequence[Item], broadcast: bool) -> bool:
    """True once the catalog's outbox holds `items`."""
    if outbox is None:
        return False
    try:
        await outbox(items, broadcast)
    except Exception as exc:  # the catalog is away too: the caller keeps them in memory
        log.warning("could not keep %d placement announcement(s) in the catalog outbox: %s", len(items),
                    type(exc).__name__)
        return False
    log.info("kept %d placement announcement(s) in the catalog outbox; the workers send them once Redis answers",
             len(items))
    return True


async def announce_placement_change(redis: Any, tenant_id: object, aliases: Iterable[tuple[str, str]] = (),
                                    timeout: float = DEFAULT_TIMEOUT, outbox: Outbox | None = None) -> bool:
    """One announcement, bounded; True once sent. When it fails it goes to `outbox` (when given)."""
    if redis is None:
        return False
    item = (tenant_id, tuple(aliases))
    try:
        await send(redis, [item], False, timeout)
        return True
    except Exception as exc:  # Redis down must not fail the change that was already committed
        log.warning("could not announce placement change for %s: %s", tenant_id, type(exc).__name__)
        await _to_outbox(outbox, [item], False)
        return False


class BatchedAnnouncements:
    """Announcements gathered for up to `window` seconds and sent in one pipeline: a worker ends
    many operations a second during a fleet migration, each one an announcement. `announce()`
    returns once the pipeline that carries its announcement was sent or failed (a move removes the
    old copy only after routers were told), so it costs its caller at most `window` + `timeout`.
    What failed goes to `outbox`, or is kept and sent again (see the module's docstring)."""

    def __init__(self, redis: Any, window: float = 0.002, timeout: float = DEFAULT_TIMEOUT,
                 outbox: Outbox | None = None) -> None:
        self.redis, self.window, self.timeout, self.outbox = redis, window, timeout, outbox
        self._pending: list[Item] = []
        self._sent: asyncio.Future | None = None
        self._sending: set[asyncio.Task] = set()
        self._kept: dict[object, set[tuple[str, str]]] = {}
        self._kept_overflow = False  # more than MAX_KEPT were kept: a "*" is owed
        self._resending: asyncio.Task | None = None

    @property
    def kept(self) -> int:
        """Tenants whose announcement waits in memory for a resend (not those in the outbox)."""
        return len(self._kept) + (1 if self._kept_overflow else 0)

    async def announce(self, tenant_id: object, aliases: Iterable[tuple[str, str]] = ()) -> bool:
        """True once sent; False when it failed (it is then in the outbox, or kept for a resend)."""
        if self.redis is None:
            return False
        self._pending.append((tenant_id, tuple(aliases)))
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_later(self.window, self._send_pending)
        return await asyncio.shield(self._sent)

    async def announce_many(self, tenant_ids: Sequence[object]) -> bool:
        """Many tenants at once (everyone on a plan that changed), in one bounded send."""
        if self.redis is None or not tenant_ids:
            return False
        return await self._deliver([(t, ()) for t in tenant_ids], len(tenant_ids) > BROADCAST_ABOVE)

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        sent, self._sent = self._sent, None
        task = asyncio.ensure_future(self._send_batch(pending, sent))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_batch(self, pending: list[Item], sent: asyncio.Future | None) -> None:
        delivered = False
        try:
            delivered = await self._deliver(pending, False)
        finally:
            if sent is not None and not sent.done():
                sent.set_result(delivered)

    async def _deliver(self, items: Sequence[Item], broadcast: bool) -> bool:
        try:
            await send(self.redis, items, broadcast, self.timeout)
            return True
        except Exception as exc:  # Redis down must not fail the changes that were already committed
            log.warning("could not announce placement changes for %d tenant(s): %s; sending them again later",
                        len(items), type(exc).__name__ if not isinstance(exc, TimeoutError) else "timed out")
            if not await _to_outbox(self.outbox, items, broadcast):
                self._keep(items, broadcast)
            return False

    def _keep(self, items: Sequence[Item], broadcast: bool) -> None:
        self._kept_overflow |= broadcast
        for tenant_id, aliases in items:
            if tenant_id in self._kept or len(self._kept) < MAX_KEPT:
                self._kept.setdefault(tenant_id, set()).update(aliases)
            else:
                self._kept_overflow = True
        if self._resending is None or self._resending.done():
            self._resending = asyncio.ensure_future(self._resend())

    async def _resend(self) -> None:
        delay = RETRY_FIRST
        while self._kept or self._kept_overflow:
            await asyncio.sleep(delay)
            kept, self._kept = self._kept, {}
            overflow, self._kept_overflow = self._kept_overflow, False
            items = [(t, tuple(a)) for t, a in kept.items()]
            broadcast = overflow or len(items) > BROADCAST_ABOVE
            try:
                await send(self.redis, items, broadcast, self.timeout)
            except Exception:
                if await _to_outbox(self.outbox, items, broadcast):  # the catalog is back: the workers send them
                    continue
                for tenant_id, aliases in kept.items():  # back, merged with what failed meanwhile
                    self._kept.setdefault(tenant_id, set()).update(aliases)
                self._kept_overflow |= overflow
                delay = min(delay * 2, RETRY_MAX)
                continue
            log.info("sent %d kept placement announcement(s)%s", len(items), " and a full invalidation" if overflow else "")
            delay = RETRY_FIRST

    async def aclose(self) -> None:
        """Send what is pending now and wait for every send under way; one last try for what is kept."""
        if self._sent is not None:
            self._send_pending()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._resending is not None:
            self._resending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resending
        if self._kept or self._kept_overflow:
            items = [(t, tuple(a)) for t, a in self._kept.items()]
            broadcast = self._kept_overflow or len(items) > BROADCAST_ABOVE
            try:
                await send(self.redis, items, broadcast, self.timeout)
            except Exception:
                if not await _to_outbox(self.outbox, items, broadcast):
                    log.warning("%d placement announcement(s) never sent; routers rely on their TTLs", len(items))
            self._kept, self._kept_overflow = {}, False
