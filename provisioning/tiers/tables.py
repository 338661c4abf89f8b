"""A tenant's tables as a move copies and compares them. Here every table of one schema belongs to
the tenant (public in a dedicated database, the tenant's schema on the schema tier); the shared tier
narrows this to the tenant's rows (shared.py)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from contracts.identifiers import quote, quote_literal
from provisioning.context import StepContext
from provisioning.servers import admin_connection


class TenantTables:
    def __init__(self, side: StepContext, schema: str) -> None:
        self.side = side
        self.database = side.database
        self.schema = schema
        self.tenant = str(uuid.UUID(str(side.tenant_id)))

    row_filter = ""  # appended to every read: which rows of a table are the tenant's

    def connect(self) -> Any:
        return admin_connection(self.side._server, self.side.box, self.database)  # type: ignore[arg-type]

    async def bind(self, conn: asyncpg.Connection) -> None:
        """Before the tenant's rows are compared: nothing to bind, the schema is the tenant's."""

    async def tables(self, conn: asyncpg.Connection) -> list[str]:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> "
                                "'alembic_version' ORDER BY tablename", self.schema)
        return [r["tablename"] for r in rows]

    async def columns(self, conn: asyncpg.Connection, table: str) -> list[str]:
        rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                                "AND table_name = $2 ORDER BY ordinal_position", self.schema, table)
        return [r["column_name"] for r in rows]

    async def key(self, conn: asyncpg.Connection, table: str) -> list[str]:
        rows = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
            self.qualified(table))
        return sorted(r["attname"] for r in rows if r["attname"] != "tenant_id")

    def qualified(self, table: str) -> str:
        return f"{quote(self.schema)}.{quote(table)}"

    def read_column(self, column: str) -> str:
        """What a copy out of here selects for a target column: rows here carry no tenant_id, so
        a target that tags rows gets the tenant's id."""
        return f"{quote_literal(self.tenant)}::uuid" if column == "tenant_id" else quote(column)

    async def clear(self, conn: asyncpg.Connection, tables: list[str]) -> None:
        """Before a copy into here: what an earlier attempt may have copied goes."""
        if tables:
            await conn.execute("TRUNCATE " + ", ".join(self.qualified(t) for t in tables))
