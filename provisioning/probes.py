"""What a step asks a server before it acts."""

from __future__ import annotations

import asyncpg

from contracts.identifiers import quote
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, admin_connection


async def database_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def role_exists(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))


async def revision(server: ServerInfo, box: SecretBox, database: str, schema: str = "public") -> str | None:
    """The Alembic revision of a tenant database (or of one tenant schema in it)."""
    async with admin_connection(server, box, database) as conn:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote(schema)}.alembic_version"):
            return None
        return await conn.fetchval(f"SELECT version_num FROM {quote(schema)}.alembic_version LIMIT 1")
