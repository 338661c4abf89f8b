"""What a backup recorded at dump time: the tenant's tables, their row counts and checksums, and
the tenant revision, taken in the dump's own snapshot, so a restore can prove it put back exactly
that (`differences()`).

Counts and checksums are computed as moves compute them (provisioning/steps/move.py): per table,
the sum of every row's 64-bit `hash_record_extended` over its columns other than `tenant_id`, in
column order (no sort, no text conversion), or, where a column type has no extended hash function,
the md5 of the rows' text in primary-key order. Leaving `tenant_id` out makes the figures of one
tenant's rows the same on every tier, so a shared-tier backup restored as a dedicated tenant (or
the other way round) is checked the same way.
"""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from contracts.identifiers import quote

MANIFEST_VERSION = 1


class TableFigures(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    columns: list[str]  # in the order the archive's rows carry them (tenant_id left out)
    rows: int
    checksum: str
    method: str  # "hash" | "md5"


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    version: int = MANIFEST_VERSION
    tier: str
    tenant_id: str
    revision: str | None
    tables: list[TableFigures]

    def figures(self) -> dict[str, dict]:
        """Counts and checksums as the catalog's `backups.manifest` keeps them."""
        return {t.name: {"rows": t.rows, "checksum": t.checksum, "method": t.method} for t in self.tables}


async def revision(conn: asyncpg.Connection, schema: str) -> str | None:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote(schema)}.alembic_version")
    return await conn.fetchval(f"SELECT version_num FROM {quote(schema)}.alembic_version") if exists else None


async def tenant_tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    """The tables that hold tenant data: every table of the schema but Alembic's own."""
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'alembic_version' "
                            "ORDER BY tablename", schema)
    return [r["tablename"] for r in rows]


async def columns(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 "
                            "AND table_name = $2 ORDER BY ordinal_position", schema, table)
    return [r["column_name"] for r in rows]


async def _key(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
        f"{quote(schema)}.{quote(table)}")
    return sorted(r["attname"] for r in rows if r["attname"] != "tenant_id")


def row_filter(has_tenant_column: bool) -> str:
    return " WHERE tenant_id = $1" if has_tenant_column else ""


async def fingerprint(conn: asyncpg.Connection, schema: str, table: str, cols: list[str],
                      tenant_id: uuid.UUID | None, method: str | None = None) -> tuple[int, str, str]:
    """(rows, checksum, method) of the tenant's rows of a table (all rows when `tenant_id` is None),
    by `method`, or by hash where the column types allow and md5 where they do not."""
    row = ", ".join(quote(c) for c in cols)
    source = f"FROM {quote(schema)}.{quote(table)}{row_filter(tenant_id is not None)}"
    args = (tenant_id,) if tenant_id is not None else ()
    if method in (None, "hash"):
        try:
            async with conn.transaction():  # a savepoint: a failed attempt leaves the snapshot usable
                found = await conn.fetchrow(
                    f"SELECT count(*) AS n, coalesce(sum(hash_record_extended(ROW({row}), 0)), 0)::text AS digest "
                    f"{source}", *args)
            return found["n"], found["digest"], "hash"
        except asyncpg.UndefinedFunctionError:
            if method == "hash":
                raise
    key = await _key(conn, schema, table) or cols
    found = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(md5(string_agg(md5(ROW({row})::text), '' "
        f"ORDER BY {', '.join(quote(c) for c in key)})), '') AS digest {source}", *args)
    return found["n"], found["digest"], "md5"


async def take(conn: asyncpg.Connection, *, tier: str, schema: str, tenant_id: uuid.UUID) -> Manifest:
    """The manifest of the tenant's tables as `conn`'s snapshot sees them (call it inside the
    REPEATABLE READ transaction the dump uses). On the shared tier only tables with `tenant_id`
    count, and only the tenant's rows."""
    tables = []
    for table in await tenant_tables(conn, schema):
        cols = await columns(conn, schema, table)
        shared = "tenant_id" in cols
        if tier == "shared" and not shared:
            continue
        data = [c for c in cols if c != "tenant_id"]
        rows, checksum, method = await fingerprint(conn, schema, table, data, tenant_id if shared else None)
        tables.append(TableFigures(name=table, columns=data, rows=rows, checksum=checksum, method=method))
    return Manifest(tier=tier, tenant_id=str(tenant_id), revision=await revision(conn, schema), tables=tables)


async def differences(manifest: Manifest, conn: asyncpg.Connection, schema: str,
                      tenant_id: uuid.UUID | None) -> list[str]:
    """What differs between the manifest and the tenant's tables in `schema` (empty: the same).
    `tenant_id` filters tables that have a tenant_id column (a shared-tier target)."""
    found = []
    present = set(await tenant_tables(conn, schema))
    for table in manifest.tables:
        if table.name not in present:
            found.append(f"table {table.name} is missing")
            continue
        shared = "tenant_id" in await columns(conn, schema, table.name)
        rows, checksum, _ = await fingerprint(conn, schema, table.name, table.columns,
                                              tenant_id if shared else None, table.method)
        if (rows, checksum) != (table.rows, table.checksum):
            found.append(f"table {table.name}: {rows} rows, {table.rows} recorded; "
                         f"checksum {'agrees' if checksum == table.checksum else 'differs'}")
    return found
