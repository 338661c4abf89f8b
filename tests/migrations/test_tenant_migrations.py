"""TENANT_MIGRATIONS: the application's own tenant revisions replace the demo's, and on the
shared tier a revision leaving a table without tenant_id and forced row-level security is refused
at migration time, rolled back, with an error that names the table and the helper."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from migrations import runner

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent.parent / "examples" / "tenant_migrations"


async def fresh_database(pg) -> str:
    name = f"tp_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return pg.dsn(name)


async def tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
        return {r["relname"] for r in rows}
    finally:
        await conn.close()


@pytest.fixture
def app_tree(monkeypatch):
    def use(name: str) -> None:
        monkeypatch.setenv("TENANT_MIGRATIONS", str(HERE / name) if name != "example" else str(EXAMPLE))
    return use


@pytest.mark.parametrize("tree", ["app_tree_good", "example"])
@pytest.mark.parametrize("tier", ["dedicated", "shared"])
async def test_the_applications_tree_is_the_tenant_tree(pg, app_tree, tier, tree):
    app_tree(tree)
    dsn = await fresh_database(pg)
    await runner.upgrade("tenant", dsn, tier=tier)
    assert await tables(dsn) == {"notes", "alembic_version"}  # not the demo's projects
    assert runner.head("tenant") == "t0001"


async def test_a_shared_table_without_the_helper_is_refused(pg, app_tree):
    app_tree("app_tree_bad")
    dsn = await fresh_database(pg)
    with pytest.raises(Exception, match=r"leaky.*create_tenant_table"):
        await runner.upgrade("tenant", dsn, tier="shared")
    assert "leaky" not in await tables(dsn)  # the revision was rolled back
    # the dedicated tier has one tenant per database: a plain table is fine there
    dedicated = await fresh_database(pg)
    await runner.upgrade("tenant", dedicated, tier="dedicated")
    assert "leaky" in await tables(dedicated)


async def test_without_the_setting_the_demo_tree_serves(pg, monkeypatch):
    monkeypatch.delenv("TENANT_MIGRATIONS", raising=False)
    dsn = await fresh_database(pg)
    await runner.upgrade("tenant", dsn, tier="shared")
    assert "projects" in await tables(dsn)
