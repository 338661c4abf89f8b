"""A worker's claims: the catalog session that holds its session-level advisory locks (the
operations it claimed, a fleet-migration run it coordinates), and the share of each server it keeps
to. When the worker dies, PostgreSQL drops the connection and the locks with it, so the next worker
resumes its operations at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping

import asyncpg

from provisioning import queue
from provisioning.runner import describe

log = logging.getLogger("tenantplane.worker")

CLAIM_ROUNDS = 3  # claims in one take: again only when one took more on a server than its share


class Claims:
    def __init__(self, dsn: str, *, timeout: float = 5.0, command_timeout: float = 30.0) -> None:
        self._dsn = dsn
        self._connect_args = {"timeout": timeout, "command_timeout": command_timeout}
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._shares: dict[uuid.UUID, int] = {}  # server -> operations this worker runs there at most

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection, for one query at a time. Should it have been lost, so have its locks;
        a new one is opened for the claims to come."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, **self._connect_args)
            yield self._conn

    async def take(self, want: int, running: Mapping[uuid.UUID, uuid.UUID | None],
                   released: list[uuid.UUID]) -> list[queue.Claim]:
        """Release `released` (operations that ended here; not taken back in this take), then claim
        up to `want` due operations, at most a server's share on each server counting `running`
        (operation -> server): a tenth of its connection capacity, since migrations and copies take
        connections from the same budget the routers use. Claims over a share are let go at once.
        Raises when the first claim fails (nothing was released or claimed then)."""
        busy = Counter(server_id for server_id in running.values() if server_id is not None)
        chosen: list[queue.Claim] = []
        over: list[uuid.UUID] = []
        ended = released  # not taken back in this take, whoever else could have them
        for attempt in range(CLAIM_ROUNDS):
            full = [server_id for server_id, n in busy.items() if n >= self._shares.get(server_id, 1_000_000)]
            try:
                async with self.connection() as conn:
                    claimed = await queue.claim(conn, want - len(chosen), release=released, full_servers=full,
                                                skip=[*running, *(c.id for c in chosen), *ended, *over])
            except Exception as exc:
                if attempt == 0:
                    raise
                log.warning("claiming operations failed: %s", describe(exc))
                break
            released = []
            extra = []
            for c in claimed:
                if c.server_id is not None:
                    self._shares[c.server_id] = max(1, c.capacity // 10)
                    if busy[c.server_id] >= self._shares[c.server_id]:
                        extra.append(c.id)  # goes back
                        continue
                    busy[c.server_id] += 1
                chosen.append(c)
            over += extra
            if not extra or len(chosen) >= want:
                break
        if over:
            try:
                await self.release(over)
            except Exception as exc:  # not run: let another worker (or the next take) have them
                log.warning("releasing claims failed: %s", describe(exc))
                with contextlib.suppress(Exception):
                    await self.release([c.id for c in chosen])
                return []
        return chosen

    async def release(self, op_ids: list[uuid.UUID]) -> None:
        async with self.connection() as conn:
            await queue.release(conn, op_ids)

    async def try_lock(self, lock_class: int, name: str) -> bool:
        async with self.connection() as conn:
            return await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", lock_class, name)

    async def unlock(self, lock_class: int, name: str) -> None:
        async with self.connection() as conn:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", lock_class, name)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
