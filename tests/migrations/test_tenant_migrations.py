"""TENANT_MIGRATIONS (the settings' tenant_tree): the application's own tenant revisions replace the demo's, and on the
shared tier a revision leaving a table without tenant_id and forced row-level security is refused
at migration time, rolled back, with an error that names the table and the helper."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from migrations import runner
from migrations.tree import DEMO_TREE, load_tenant_tree

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


def app_tree(name: str) -> runner.TenantTree:
    """What TENANT_MIGRATIONS naming that folder gives every process (the settings' tenant_tree)."""
    return load_tenant_tree(str(HERE / name) if name != "example" else str(EXAMPLE))


@pytest.mark.parametrize("tree", ["app_tree_good", "example"])
@pytest.mark.parametrize("tier", ["dedicated", "shared"])
async def test_the_applications_tree_is_the_tenant_tree(pg, tier, tree):
    mine = app_tree(tree)
    dsn = await fresh_database(pg)
    await runner.upgrade(mine, dsn, tier=tier)
    assert await tables(dsn) == {"notes", "alembic_version"}  # not the demo's projects
    assert runner.head(mine) == "t0001" and mine.identity() != DEMO_TREE.identity()


async def test_a_shared_table_without_the_helper_is_refused(pg):
    bad = app_tree("app_tree_bad")
    dsn = await fresh_database(pg)
    with pytest.raises(Exception, match=r"leaky.*create_tenant_table"):
        await runner.upgrade(bad, dsn, tier="shared")
    assert "leaky" not in await tables(dsn)  # the revision was rolled back
    # the dedicated tier has one tenant per database: a plain table is fine there
    dedicated = await fresh_database(pg)
    await runner.upgrade(bad, dedicated, tier="dedicated")
    assert "leaky" in await tables(dedicated)


async def test_without_the_setting_the_demo_tree_serves(pg):
    assert load_tenant_tree(None) is DEMO_TREE and load_tenant_tree("") is DEMO_TREE
    dsn = await fresh_database(pg)
    await runner.upgrade(DEMO_TREE, dsn, tier="shared")
    assert "projects" in await tables(dsn)
