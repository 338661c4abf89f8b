"""The webhook's one write: the event row, inserted (or its delivery counted) in one statement on
an asyncpg pool of its own. Stripe waits on this and nothing else, so it skips what a session
costs (pool ping, BEGIN, COMMIT, the ORM): one round trip in autocommit, the payload passed as the
text Stripe sent (PostgreSQL parses it into jsonb). A new event also wakes the workers' appliers
in that statement (`pg_notify`, delivered at commit, so a listener never looks before the row
exists; a duplicate wakes nobody)."""

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
SELECT inserted, state, CASE WHEN inserted THEN pg_notify($5, '')::text END AS woke FROM recorded
"""


class EventRecorder:
    def __init__(self, dsn: str, *, connect_timeout: float, statement_timeout: float) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

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
        row = await (await self._ready()).fetchrow(_RECORD, event_id, type_, created, payload,
                                                    BILLING_EVENTS_CHANNEL)
        return row["inserted"], row["state"]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
