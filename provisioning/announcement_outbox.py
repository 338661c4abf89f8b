"""The announcement outbox: every statement on `announcement_outbox` lives here.

An announcement Redis did not take (provisioning/announcements.py) is written here by the process
that failed to send it, so it outlives that process; a worker duty publishes the waiting rows, oldest
first, once Redis answers, and deletes them in the transaction that read them. The delete commits
only after the publish succeeded, so a deliverer killed mid-way leaves the rows for the next one
(an announcement is a "drop your copy", so being sent twice is harmless; being lost is not).

Deliverers take turns fleet-wide (a transaction-scoped advisory lock, contracts/locks.py): one
publishes at a time, so rows go out in the order they were written and each once per delivery.

The happy path writes nothing here: a change is announced straight after its commit and only a
failed send costs a catalog write (see the README's Faults for the window this leaves).
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
INTERVAL = 1.0  # seconds between rounds; after failed rounds the pause doubles up to BACKOFF_MAX
BACKOFF_MAX = 10.0

# one row per item in order, then (for a broadcast) one row without a tenant
_KEEP = ("INSERT INTO announcement_outbox (tenant_id, aliases) "
         "SELECT (e->>0)::uuid, e->1 FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS x(e, n) "
         "ORDER BY n")
_TAKE = ("DELETE FROM announcement_outbox WHERE id IN (SELECT id FROM announcement_outbox ORDER BY id LIMIT $1) "
         "RETURNING id, tenant_id, aliases::text AS aliases")
_WAITING = "SELECT count(*) FROM announcement_outbox"
_ALIASES = msgspec.json.Decoder(list[tuple[str, str]])


async def keep(db: Any, items: Sequence[Item], broadcast: bool = False) -> None:
    """Write what could not be announced, in order. `db` has asyncpg's execute (a pool, a
    connection, or the control plane's DriverSQL)."""
    rows: list[tuple[str | None, list[tuple[str, str]]]] = [(str(t), list(a)) for t, a in items]
    if broadcast:
        rows.append((None, []))
    if rows:
        await db.execute(_KEEP, msgspec.json.encode(rows).decode())


async def waiting(db: Any) -> int:
    """Rows waiting for a delivery (the tenantplane_worker_announcements_waiting gauge)."""
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
