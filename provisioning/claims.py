"""A worker's claims connection: the catalog session that holds its session-level advisory locks
(the operations it claimed, a fleet-migration run it coordinates). When the worker dies, PostgreSQL
drops the connection and the locks with it, so the next worker resumes at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg


class ClaimsConnection:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The connection, for one query at a time. Should it have been lost, so have its locks;
        a new one is opened for the claims to come."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn)
            yield self._conn

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
