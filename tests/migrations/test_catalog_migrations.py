"""The catalog's newest revision goes down and up again on a real PostgreSQL: 0012 (the
announcement outbox) adds its table, its downgrade removes it and leaves 0011's tables, and an
upgrade after that puts it back."""

from __future__ import annotations

import asyncpg

from migrations import runner
from tests.conftest import fresh_catalog


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()


async def test_the_announcement_outbox_migration_goes_down_and_up(pg):
    dsn = await fresh_catalog(pg, "catalog_migration_0012")
    assert runner.head("catalog") == "0012" and await _version(dsn) == "0012"
    assert {"announcement_outbox", "tenant_erasures"} <= await _tables(dsn)

    await runner.downgrade("catalog", dsn, "0011")
    assert await _version(dsn) == "0011"
    tables = await _tables(dsn)
    assert "announcement_outbox" not in tables and "tenant_erasures" in tables

    await runner.upgrade("catalog", dsn)
    assert await _version(dsn) == "0012"
    conn = await asyncpg.connect(dsn)
    try:  # the table is usable as its owner module writes it
        await conn.execute("INSERT INTO announcement_outbox (tenant_id) VALUES (NULL)")
        row = await conn.fetchrow("SELECT id, aliases::text AS aliases, created_at FROM announcement_outbox")
        assert row["id"] >= 1 and row["aliases"] == "[]" and row["created_at"] is not None
    finally:
        await conn.close()
