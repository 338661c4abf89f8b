"""Database servers as the provisioner sees them: how to reach one as its admin."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import asyncpg
import msgspec

from provisioning.sealing import SecretBox


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    host: str
    port: int
    admin_user: str
    admin_database: str
    admin_password_sealed: str | None
    sslmode: str | None = None

    def dsn(self, box: SecretBox, database: str | None = None) -> str:
        password = box.open(self.admin_password_sealed, str(self.id)) if self.admin_password_sealed else ""
        auth = quote(self.admin_user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        query = f"?sslmode={self.sslmode}" if self.sslmode else ""
        db = quote(database or self.admin_database, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{db}{query}"


SERVER_COLUMNS = "id, name, host, port, admin_user, admin_database, admin_password_sealed, sslmode"


async def load_server(catalog: asyncpg.Pool, server_id: uuid.UUID) -> ServerInfo:
    row = await catalog.fetchrow(f"SELECT {SERVER_COLUMNS} FROM database_servers WHERE id = $1", server_id)
    if row is None:
        raise LookupError(f"database server {server_id} is not registered")
    return ServerInfo(**dict(row))


async def open_admin_connection(server: ServerInfo, box: SecretBox, database: str | None = None
                                ) -> asyncpg.Connection:
    return await asyncpg.connect(server.dsn(box, database), timeout=10, statement_cache_size=0)


@asynccontextmanager
async def admin_connection(server: ServerInfo, box: SecretBox, database: str | None = None
                           ) -> AsyncIterator[asyncpg.Connection]:
    conn = await open_admin_connection(server, box, database)
    try:
        yield conn
    finally:
        await conn.close()


class AdminSessions:
    """Admin sessions a worker keeps between operations, at most `keep` idle ones per server, so
    that an operation's first step does not pay a SCRAM connect. A session goes back only when it
    is clean (not in a transaction; its session-level advisory locks are released first) and is
    checked with a round trip when it has been idle for more than `check_after` seconds; one idle
    for longer than `idle_seconds` is closed."""

    def __init__(self, box: SecretBox, keep: int = 1, idle_seconds: float = 60.0, check_after: float = 5.0) -> None:
        self.box, self.keep, self.idle_seconds, self.check_after = box, keep, idle_seconds, check_after
        self._idle: dict[ServerInfo, list[tuple[asyncpg.Connection, float]]] = {}

    async def acquire(self, server: ServerInfo) -> asyncpg.Connection:
        await self._close_expired()
        idle = self._idle.get(server, [])
        while idle:
            conn, since = idle.pop()
            if conn.is_closed():
                continue
            if time.monotonic() - since > self.check_after:
                try:
                    await conn.fetchval("SELECT 1", timeout=5)
                except Exception:  # any failure, e.g. asyncpg's InternalClientError on a session
                    conn.terminate()  # the server dropped while it was idle: use another
                    continue
            return conn
        return await open_admin_connection(server, self.box)

    async def release(self, server: ServerInfo, conn: asyncpg.Connection) -> None:
        if not conn.is_closed() and not conn.is_in_transaction():
            try:
                await conn.execute("SELECT pg_advisory_unlock_all()", timeout=5)
                idle = self._idle.setdefault(server, [])
                if len(idle) < self.keep:
                    idle.append((conn, time.monotonic()))
                    return
            except Exception:  # its state is unknown: not kept
                pass
        await _close_quietly(conn)

    async def _close_expired(self) -> None:
        now, expired = time.monotonic(), []
        for server, idle in self._idle.items():  # taken out first: others may acquire meanwhile
            expired += [conn for conn, since in idle if now - since > self.idle_seconds]
            self._idle[server] = [(conn, since) for conn, since in idle if now - since <= self.idle_seconds]
        for conn in expired:
            await _close_quietly(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, {}
        for sessions in idle.values():
            for conn, _ in sessions:
                await _close_quietly(conn)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=5)
    except Exception:  # a session the server already dropped
        conn.terminate()
