"""The webhook's one write: the event row, inserted (or its delivery counted) in one statement on
an asyncpg pool of its own. Stripe waits on this and nothing else, so it skips what a session
costs (pool ping, BEGIN, COMMIT, the ORM): one round trip in autocommit, the payload passed as the
text Stripe sent (PostgreSQL parses it into jsonb).

A new event wakes the workers' appliers with one NOTIFY sent after the row is committed (so a
listener never looks before the row exists), at most one per `WAKE_EVERY_SECONDS` however many
events arrived meanwhile: a NOTIFY inside the INSERT made PostgreSQL commit notifying transactions
one at a time (they queue on a global lock), which under a burst of deliveries held every webhook
answer behind the others. The applier drains everything waiting once woken; a wake lost with its
process (killed between the INSERT and the NOTIFY) costs at most the applier's polling interval."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from contracts.channels import BILLING_EVENTS_CHANNEL

POOL_SIZE = 10

_RECORD = """
WITH recorded AS (
    INSERT INTO billing_events (id, type, created, state, payload)
    VALUES ($1, $2, $3, 'received', $4::jsonb)
    ON CONFLICT (id) DO UPDATE SET deliveries = billing_events.deliveries + 1
    RETURNING xmax = 0 AS inserted, state
)
SELECT inserted, state FROM recorded
"""
_WAKE = "SELECT pg_notify($1, '')"
WAKE_EVERY_SECONDS = 0.05


class EventRecorder:
    def __init__(self, dsn: str, *, connect_timeout: float, statement_timeout: float) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._wake: asyncio.Task[None] | None = None

    async def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=POOL_SIZE, timeout=self.connect_timeout,
                        command_timeout=self.statement_timeout)
        return self._pool

    async def record(self, event_id: str, type_: str, created: dt.datetime, payload: str) -> tuple[bool, str]:
        """(inserted, state): inserted is False for a second delivery of the same event."""
        row = await (await self._ready()).fetchrow(_RECORD, event_id, type_, created, payload)
        if row["inserted"]:
            self._wake_soon()
        return row["inserted"], row["state"]

    def _wake_soon(self) -> None:
        """One wake for every event recorded until it is sent (the events before it are committed:
        each caller's INSERT returned before it asked)."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_task(self._send_wake())

    async def _send_wake(self) -> None:
        await asyncio.sleep(WAKE_EVERY_SECONDS)
        self._wake = None  # an event recorded from here on asks for a wake of its own
        try:
            await (await self._ready()).execute(_WAKE, BILLING_EVENTS_CHANNEL)
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError):
            pass  # the applier's polling interval is the fallback; the event itself is stored

    async def close(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
