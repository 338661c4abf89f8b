"""The catalog's newest revisions go down and up again on a real PostgreSQL: 0012 (the
announcement outbox), 0013 (per-tenant KMS keys) and 0015 (domain challenges, with
tenant_domains.verified_at) add their tables, 0014 the events' give-up columns; their downgrades
remove them and leave 0011's tables, and an upgrade after that puts them back."""

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


async def _columns(dsn: str, table: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_name = $1", table)
        return {r["column_name"] for r in rows}
    finally:
        await conn.close()


# a revision and the table it adds, or "table.column" for one that adds columns to an older table
NEWEST = {"0012": "announcement_outbox", "0013": "tenant_kms_keys", "0014": "tenant_events.abandoned_at",
          "0015": "domain_challenges"}
HEAD = max(NEWEST)
NEW_TABLES = {name for name in NEWEST.values() if "." not in name}


async def test_the_newest_migrations_go_down_and_up(pg):
    dsn = await fresh_catalog(pg, "catalog_migration_newest")
    assert runner.head("catalog") == HEAD and await _version(dsn) == HEAD
    assert {*NEW_TABLES, "tenant_erasures"} <= await _tables(dsn)
    assert {"abandoned_at", "pending_since"} <= await _columns(dsn, "tenant_events")

    await runner.downgrade("catalog", dsn, "0014")
    assert "domain_challenges" not in await _tables(dsn) and not await _columns(dsn, "tenant_domains") & {"verified_at"}
    assert {"abandoned_at", "pending_since"} <= await _columns(dsn, "tenant_events")

    await runner.downgrade("catalog", dsn, "0013")
    assert await _version(dsn) == "0013"
    assert not {"abandoned_at", "pending_since"} & await _columns(dsn, "tenant_events")

    await runner.downgrade("catalog", dsn, "0012")
    assert await _version(dsn) == "0012"
    assert "tenant_kms_keys" not in await _tables(dsn)

    await runner.downgrade("catalog", dsn, "0011")
    assert await _version(dsn) == "0011"
    tables = await _tables(dsn)
    assert not NEW_TABLES & tables and "tenant_erasures" in tables

    await runner.upgrade("catalog", dsn)
    assert await _version(dsn) == HEAD
    assert NEW_TABLES <= await _tables(dsn) and "verified_at" in await _columns(dsn, "tenant_domains")
    assert {"abandoned_at", "pending_since"} <= await _columns(dsn, "tenant_events")
    conn = await asyncpg.connect(dsn)
    try:  # the table is usable as its owner module writes it
        await conn.execute("INSERT INTO announcement_outbox (tenant_id) VALUES (NULL)")
        row = await conn.fetchrow("SELECT id, aliases::text AS aliases, created_at FROM announcement_outbox")
        assert row["id"] >= 1 and row["aliases"] == "[]" and row["created_at"] is not None
    finally:
        await conn.close()
