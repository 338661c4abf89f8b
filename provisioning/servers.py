"""Database servers as the provisioner sees them: how to reach one as its admin."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
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
