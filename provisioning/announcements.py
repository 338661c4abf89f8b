"""Announcing a routing-relevant catalog change: drop the shared (Redis) copy, then publish, so
every router process drops its local copy at once. Used by the control plane and the provisioner
after they commit.

Redis is never waited on for long: every send is bounded by `timeout` (the change is already
committed, and an admin request or a move's pause must not wait for Redis). What is not sent is
never only in this process's memory while the catalog answers (provisioning/announcement_outbox.py):

- an announcement *noted* in the transaction of its change (admin writes, billing applies, an
  operation's end) is in the catalog's outbox from the commit on; once sent, its rows are settled
  (deleted); when the send fails they are made due at once, and the workers publish them once
  Redis answers. A process that dies between its commit and its send leaves them for the workers
  (after the outbox's grace, in which the row is its own process's to send).
- any other announcement that could not be sent is written to the outbox then.

Only when the catalog cannot take it either is an announcement kept in memory and sent again in
the background with a growing pause (moved to the outbox at the next failure the catalog takes); at
most MAX_KEPT tenants are kept, past that one "drop everything" broadcast is sent instead (the
routers' shared copies then expire at their Redis TTL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

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
Entry = tuple[Item, tuple[int, ...]]  # an announcement and its outbox rows (none: not noted)


class Outbox(Protocol):
    """The catalog's announcement outbox as a process's announcer uses it (announcement_outbox.CatalogOutbox);
    each call raises when the catalog cannot be reached."""

    async def keep(self, items: Sequence[Item], broadcast: bool) -> None: ...  # not sent: the workers' now
    async def settle(self, ids: Sequence[int]) -> None: ...  # noted rows sent: gone
    async def due_now(self, ids: Sequence[int]) -> None: ...  # noted rows not sent: the workers' now


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
    if not items and not broadcast:
        return True
    try:
        await outbox.keep(items, broadcast)
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
    old copy only after routers were told), so it costs its caller at most `window` + `timeout`
    (and, when it failed, one outbox write). What was noted is settled in the background once
    sent; what failed is the outbox's, or kept and sent again (see the module's docstring)."""

    def __init__(self, redis: Any, window: float = 0.002, timeout: float = DEFAULT_TIMEOUT,
                 outbox: Outbox | None = None) -> None:
        self.redis, self.window, self.timeout, self.outbox = redis, window, timeout, outbox
        self._pending: list[Entry] = []
        self._sent: asyncio.Future | None = None
        self._sending: set[asyncio.Task] = set()
        self._settling: set[asyncio.Task] = set()
        self._kept: dict[object, set[tuple[str, str]]] = {}
        self._kept_overflow = False  # more than MAX_KEPT were kept: a "*" is owed
        self._resending: asyncio.Task | None = None

    @property
    def kept(self) -> int:
        """Tenants whose announcement waits in memory for a resend (not those in the outbox)."""
        return len(self._kept) + (1 if self._kept_overflow else 0)

    async def announce(self, tenant_id: object, aliases: Iterable[tuple[str, str]] = (),
                       noted: Sequence[int] = ()) -> bool:
        """True once sent; False when it failed (it is then in the outbox, or kept for a resend).
        `noted`: its outbox rows, written in the transaction of the change."""
        if self.redis is None:
            return False
        self._pending.append(((tenant_id, tuple(aliases)), tuple(noted)))
        if self._sent is None:
            loop = asyncio.get_running_loop()
            self._sent = loop.create_future()
            loop.call_later(self.window, self._send_pending)
        return await asyncio.shield(self._sent)

    async def announce_many(self, tenant_ids: Sequence[object], noted: Sequence[int] = ()) -> bool:
        """Many tenants at once (everyone on a plan that changed), in one bounded send; `noted`:
        their outbox rows, when the change wrote them."""
        if self.redis is None or not tenant_ids:
            return False
        # one row per tenant (notify.note); which row goes with which entry does not matter, only
        # that every noted tenant is known as noted (its row is in the outbox already)
        ids = list(noted)
        entries: list[Entry] = [((t, ()), (ids[i],) if i < len(ids) else ()) for i, t in enumerate(tenant_ids)]
        return await self._deliver(entries, len(tenant_ids) > BROADCAST_ABOVE)

    def _send_pending(self) -> None:
        pending, self._pending = self._pending, []
        sent, self._sent = self._sent, None
        task = asyncio.ensure_future(self._send_batch(pending, sent))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_batch(self, pending: list[Entry], sent: asyncio.Future | None) -> None:
        delivered = False
        try:
            delivered = await self._deliver(pending, False)
        finally:
            if sent is not None and not sent.done():
                sent.set_result(delivered)

    async def _deliver(self, entries: Sequence[Entry], broadcast: bool) -> bool:
        items = [item for item, _ in entries]
        noted = [i for _, ids in entries for i in ids]
        try:
            await send(self.redis, items, broadcast, self.timeout)
        except Exception as exc:  # Redis down must not fail the changes that were already committed
            log.warning("could not announce placement changes for %d tenant(s): %s; sending them again later",
                        len(items), type(exc).__name__ if not isinstance(exc, TimeoutError) else "timed out")
            if noted:
                await self._noted_due_now(noted)
            # what was noted is in the outbox already (due now, or after the grace if that failed)
            rest = [item for item, ids in entries if not ids]
            if (rest or (broadcast and not noted)) and not await _to_outbox(self.outbox, rest, broadcast and not noted):
                self._keep(rest, broadcast)
            return False
        if noted and self.outbox is not None:
            task = asyncio.ensure_future(self._settle(noted))  # the caller need not wait for it
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        return True

    async def _settle(self, ids: Sequence[int]) -> None:
        try:
            await self.outbox.settle(ids)
        except Exception as exc:  # left in the outbox: a worker sends them once more after the grace
            log.info("could not settle %d sent announcement(s) in the outbox: %s", len(ids), type(exc).__name__)

    async def _noted_due_now(self, ids: Sequence[int]) -> None:
        if self.outbox is None:
            return
        try:
            await self.outbox.due_now(ids)
        except Exception as exc:  # they become due at the end of their grace anyway
            log.info("could not hand %d noted announcement(s) to the workers now: %s", len(ids), type(exc).__name__)

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
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
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
