"""The announcement outbox: every statement on `announcement_outbox` lives here.

Two ways in (provisioning/announcements.py):
- *noted*: the change's own transaction writes the row (`note()`, or `note_clause()` inside an
  operation's finishing statement), due only after GRACE_SECONDS. After its commit the process
  sends it and deletes it (`settle`); a failed send makes it due at once (`due_now`). So a crash
  anywhere between the commit and the send loses nothing: the row is there, and a worker sends it
  after the grace.
- *kept*: an announcement that was not noted and could not be sent is written at once, due at once.

A worker duty publishes the due rows, oldest first, and deletes them in the transaction that read
them. The delete commits only after the publish succeeded, so a deliverer killed mid-way leaves the
rows for the next one (an announcement is a "drop your copy", so being sent twice is harmless;
being lost is not). Deliverers take turns fleet-wide (a transaction-scoped advisory lock,
contracts/locks.py): one publishes at a time, so rows go out in the order they were written, and a
row once per delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from contracts import locks
from provisioning.announcements import BROADCAST_ABOVE, DEFAULT_TIMEOUT, Item, send

log = logging.getLogger("tenantplane.invalidation")

BATCH = 1000  # rows published in one Redis round trip
# a noted row is its own process's to send for this long (its window, a send's timeout and the
# settle fit well within); past it, the process is taken for dead and the workers send it
GRACE_SECONDS = 10.0
INTERVAL = 1.0  # seconds between rounds; after failed rounds the pause doubles up to BACKOFF_MAX
BACKOFF_MAX = 10.0

# one row per item in order (then, for a broadcast, one row without a tenant), due $2 seconds from now
_INSERT = ("INSERT INTO announcement_outbox (tenant_id, aliases, due_at) "
           "SELECT (e->>0)::uuid, e->1, now() + make_interval(secs => $2) "
           "FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS x(e, n) ORDER BY n RETURNING id")
_SETTLE = "DELETE FROM announcement_outbox WHERE id = ANY($1::bigint[])"
_DUE_NOW = "UPDATE announcement_outbox SET due_at = now() WHERE id = ANY($1::bigint[]) AND due_at > now()"
_TAKE = ("DELETE FROM announcement_outbox WHERE id IN (SELECT id FROM announcement_outbox WHERE due_at <= now() "
         "  ORDER BY id LIMIT $1) "
         "RETURNING id, tenant_id, aliases::text AS aliases")
_WAITING = "SELECT count(*) FROM announcement_outbox WHERE due_at <= now()"
# erasure: a tenant's rows lose their aliases (its slug and domains) and one broadcast row, due at
# once, takes their place in the routers' caches; the rows themselves still drop its placement
_FORGET_ALIASES = (
    "WITH forgotten AS (UPDATE announcement_outbox SET aliases = '[]'::jsonb "
    "  WHERE tenant_id = $1 AND aliases <> '[]'::jsonb RETURNING id), "
    "broadcast AS (INSERT INTO announcement_outbox (tenant_id) SELECT NULL WHERE EXISTS (SELECT 1 FROM forgotten)) "
    "SELECT count(*) FROM forgotten")
_ALIASES = msgspec.json.Decoder(list[tuple[str, str]])


def _rows(items: Sequence[Item], broadcast: bool) -> str:
    rows: list[tuple[str | None, list[tuple[str, str]]]] = [(str(t), list(a)) for t, a in items]
    if broadcast:
        rows.append((None, []))
    return msgspec.json.encode(rows).decode()


async def keep(db: Any, items: Sequence[Item], broadcast: bool = False) -> None:
    """Write what could not be announced, in order, due at once. `db` has asyncpg's execute (a
    pool, a connection, or the control plane's DriverSQL)."""
    if items or broadcast:
        await db.execute(_INSERT, _rows(items, broadcast), 0.0)


async def note(db: Any, items: Sequence[Item], grace: float = GRACE_SECONDS) -> list[int]:
    """In the transaction of the change the items announce: their rows, due after `grace`; the
    ids go to the announcer, which settles them once sent. `db` has asyncpg's fetch."""
    if not items:
        return []
    return [row["id"] for row in await db.fetch(_INSERT, _rows(items, False), grace)]


def note_clause(*, tenant_id: str) -> str:
    """`note()` of one tenant without aliases as a CTE of the caller's statement (an operation's end,
    provisioning/queue.py); `tenant_id` is an SQL expression of that statement, the row's id is
    `(SELECT id FROM noted)`."""
    return ("noted AS (INSERT INTO announcement_outbox (tenant_id, due_at) "
            f"  SELECT {tenant_id}, now() + make_interval(secs => {GRACE_SECONDS}) "
            f"  WHERE {tenant_id} IS NOT NULL RETURNING id)")


async def forget_aliases(db: Any, tenant_id: Any) -> int:
    """Erasure (erasure_billing.py): the tenant's rows no longer name its slug or domains; how many
    held some. Routers drop those aliases all the same: a broadcast ("every tenant") is written in
    their place (an erasure is rare, a full cache refill then is cheap). `db` has asyncpg's fetchval."""
    return int(await db.fetchval(_FORGET_ALIASES, tenant_id))


async def settle(db: Any, ids: Sequence[int]) -> None:
    """Noted rows whose announcement was sent: gone."""
    if ids:
        await db.execute(_SETTLE, list(ids))


async def due_now(db: Any, ids: Sequence[int]) -> None:
    """Noted rows whose announcement could not be sent: the workers' at once."""
    if ids:
        await db.execute(_DUE_NOW, list(ids))


class CatalogOutbox:
    """The outbox as a process's announcer uses it (announcements.Outbox). `db` has asyncpg's
    execute, each call a transaction of its own (a pool; the control plane's EngineSQL)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    async def keep(self, items: Sequence[Item], broadcast: bool) -> None:
        await keep(self.db, items, broadcast)

    async def settle(self, ids: Sequence[int]) -> None:
        await settle(self.db, ids)

    async def due_now(self, ids: Sequence[int]) -> None:
        await due_now(self.db, ids)


async def waiting(db: Any) -> int:
    """Rows due and not yet delivered (the tenantplane_worker_announcements_waiting gauge; noted
    rows still in their grace are their own process's and not counted)."""
    return int(await db.fetchval(_WAITING))


def _merged(rows: Sequence[Any]) -> tuple[list[Item], bool]:
    """The rows as one send: each tenant once (its aliases together), in the order first written."""
    by_tenant: dict[str, set[tuple[str, str]]] = {}
    broadcast = False
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["tenant_id"] is None:
            broadcast = True
            continue
        by_tenant.setdefault(str(row["tenant_id"]), set()).update(_ALIASES.decode(row["aliases"]))
    items = [(t, tuple(sorted(a))) for t, a in by_tenant.items()]
    return items, broadcast or len(items) > BROADCAST_ABOVE


async def deliver_waiting(catalog: Any, redis: Any, timeout: float = DEFAULT_TIMEOUT, batch: int = BATCH) -> int | None:
    """One delivery: up to `batch` of the oldest rows published and deleted. The number delivered,
    or None when another deliverer holds the turn. Raises when Redis did not take them (the rows
    stay). `catalog` is an asyncpg pool."""
    async with catalog.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, 0)", locks.ANNOUNCEMENT_OUTBOX):
            return None
        rows = await conn.fetch(_TAKE, batch)
        if rows:
            items, broadcast = _merged(rows)
            await send(redis, items, broadcast, timeout)  # an error rolls the delete back
        return len(rows)


async def deliver_periodically(catalog: Any, redis: Any, timeout: float = DEFAULT_TIMEOUT,
                               on_waiting: Callable[[int], None] | None = None, interval: float = INTERVAL) -> None:
    """The worker duty: deliver while rows wait (a backlog goes out batch after batch), then pause;
    `on_waiting` is told how many still wait after each round."""
    failures = 0
    while True:
        try:
            while (await deliver_waiting(catalog, redis, timeout)) == BATCH:
                pass
            if failures:
                log.info("announcement outbox delivered again after %d failed round(s)", failures)
            failures = 0
        except Exception as exc:  # Redis (or the catalog) is away: the rows wait for the next round
            failures += 1
            if failures == 1:
                log.warning("announcement outbox not delivered (%s); trying again",
                            "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
        if on_waiting is not None:
            try:
                on_waiting(await waiting(catalog))
            except Exception as exc:
                log.debug("announcements waiting not counted: %s", type(exc).__name__)
        await asyncio.sleep(min(BACKOFF_MAX, interval * 2 ** failures) if failures else interval)
