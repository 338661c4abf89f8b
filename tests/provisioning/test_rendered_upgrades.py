"""The fast path of tenant migrations: a revision range rendered once (Alembic offline mode) and
applied per tenant in one transaction that checks `alembic_version` first; Alembic online for
whatever cannot be rendered; a crash mid-apply leaves the tenant at its old revision."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from pathlib import Path

import asyncpg
import pytest

from contracts import identifiers
from migrations import runner
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, load_server
from provisioning.steps import upgrades
from tests.conftest import Stack, create_active_tenant
from tests.provisioning.test_fleet_migrations import put_back

HEAD = runner.head(runner.DEMO_TREE)


async def tenant_at(api, stack: Stack, revision: str) -> tuple[dict, ServerInfo, SecretBox]:
    tenant = await create_active_tenant(api)
    if revision != HEAD:
        await put_back(stack, tenant, revision)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        server_id = await catalog.fetchval("SELECT server_id FROM placements WHERE tenant_id = $1::uuid", tenant["id"])
        server = await load_server(catalog, server_id)
    finally:
        await catalog.close()
    return tenant, server, SecretBox(stack.settings.secret_key)


async def state_of(stack: Stack, tenant: dict) -> tuple[str, bool]:
    """(alembic_version, whether projects.archived exists)"""
    conn = await asyncpg.connect(stack.pg.dsn(identifiers.tenant_database(tenant["id"])))
    try:
        return (await conn.fetchval("SELECT version_num FROM alembic_version"),
                bool(await conn.fetchval("SELECT 1 FROM information_schema.columns "
                                         "WHERE table_name = 'projects' AND column_name = 'archived'")))
    finally:
        await conn.close()


def test_a_range_renders_once_as_plain_sql_ending_with_the_version_move():
    script = runner.render_upgrade_sync(runner.DEMO_TREE, "t0001", "t0002", tier="dedicated")
    assert script is not None and "ADD COLUMN archived" in script
    assert "UPDATE alembic_version SET version_num='t0002' WHERE alembic_version.version_num = 't0001'" in script
    assert "BEGIN" not in script and "COMMIT" not in script  # the applier owns the transaction
    assert runner.render_upgrade_sync(runner.DEMO_TREE, "t0001", "t0002", tier="dedicated") is script  # cached
    assert runner.render_upgrade_sync(runner.DEMO_TREE, "t0002", "t0001") is None  # not an upgrade
    assert runner.render_upgrade_sync(runner.DEMO_TREE, "t0002", "t0002") is None  # nothing to render
    assert runner.render_upgrade_sync(runner.DEMO_TREE, "t9999", "t0002") is None  # unknown revision


def _tree_with(tmp_path: Path, body: str) -> runner.Config:
    """The tenant tree plus a revision t0003 with `body` (module level)."""
    tree = tmp_path / "tenant"
    shutil.copytree(Path(runner.__file__).parent / "tenant", tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "versions" / "0003_extra.py").write_text(textwrap.dedent('''
        import sqlalchemy as sa
        from alembic import op

        revision = "t0003"
        down_revision = "t0002"
        branch_labels = None
        depends_on = None
        ''') + textwrap.dedent(body))
    cfg = runner.alembic_config(runner.DEMO_TREE)
    cfg.set_main_option("script_location", str(tree))
    return cfg


def test_a_migration_that_reads_the_database_is_not_rendered(tmp_path: Path):
    cfg = _tree_with(tmp_path, '''
        def upgrade():
            if op.get_bind().execute(sa.text("SELECT count(*) FROM projects")).scalar():
                op.execute("UPDATE projects SET archived = false")
        ''')
    assert runner.render_with(cfg, "t0002", "t0003") is None
    assert runner.render_with(cfg, "t0001", "t0003") is None  # one such revision sends the range online


def test_a_revision_marked_online_only_is_not_rendered(tmp_path: Path):
    body = '''
        def upgrade():
            op.execute("UPDATE projects SET archived = false")
        '''
    assert "UPDATE projects SET archived = false" in runner.render_with(_tree_with(tmp_path / "a", body), "t0002", "t0003")
    assert runner.render_with(_tree_with(tmp_path / "b", "online_only = True\n" + textwrap.dedent(body)),
                              "t0002", "t0003") is None


async def test_the_rendered_script_upgrades_a_tenant_at_its_from_revision(api, stack: Stack):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    assert await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, identifiers.tenant_database(tenant["id"]), HEAD) == HEAD
    assert await state_of(stack, tenant) == (HEAD, True)
    # again: nothing to do, nothing changed
    assert await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, identifiers.tenant_database(tenant["id"]), HEAD) == HEAD


async def test_a_tenant_at_another_revision_is_not_given_the_script(api, stack: Stack):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    db = identifiers.tenant_database(tenant["id"])
    await runner.render_upgrade(runner.DEMO_TREE, "t0001", "t0002", tier="dedicated")  # rendered and cached
    conn = await asyncpg.connect(stack.pg.dsn(db))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = 'x0001'")  # a revision we do not know
        assert await upgrades.apply_rendered(conn, runner.DEMO_TREE, "t0002") is None  # left to the online path
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "x0001"
        assert not await conn.fetchval("SELECT 1 FROM information_schema.columns WHERE column_name = 'archived'")
        await conn.execute("UPDATE alembic_version SET version_num = 't0001'")
        assert await upgrades.apply_rendered(conn, runner.DEMO_TREE, "t0001") == "t0001"  # at the target: untouched
        assert await state_of(stack, tenant) == ("t0001", False)
    finally:
        await conn.close()


async def test_a_script_that_does_not_reach_its_target_is_rolled_back(api, stack: Stack, monkeypatch):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    real = runner.render_upgrade

    async def without_version_move(*args, **kwargs):
        script = await real(*args, **kwargs)
        return script.split("UPDATE alembic_version")[0]

    monkeypatch.setattr(runner, "render_upgrade", without_version_move)
    with pytest.raises(upgrades.UnexpectedRevision):
        await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, identifiers.tenant_database(tenant["id"]), HEAD)
    assert await state_of(stack, tenant) == ("t0001", False)


async def test_an_unrenderable_range_runs_online(api, stack: Stack, monkeypatch):
    tenant, server, box = await tenant_at(api, stack, "t0001")

    async def cannot_render(*args, **kwargs):
        return None

    monkeypatch.setattr(runner, "render_upgrade", cannot_render)
    online: list[str] = []
    real_upgrade = runner.upgrade

    async def spy(tree, dsn, revision="head", **attributes):
        online.append(revision)
        await real_upgrade(tree, dsn, revision, **attributes)

    monkeypatch.setattr(runner, "upgrade", spy)
    assert await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, identifiers.tenant_database(tenant["id"]), HEAD) == HEAD
    assert online == [HEAD]
    assert await state_of(stack, tenant) == (HEAD, True)


@pytest.mark.parametrize("expected", [None, "t0001"], ids=["checked", "one-query"])
async def test_a_crash_mid_apply_leaves_the_old_revision_and_a_rerun_finishes(expected, api, stack: Stack):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    db = identifiers.tenant_database(tenant["id"])
    blocker = await asyncpg.connect(stack.pg.dsn(db))
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        blocker_tx = blocker.transaction()
        await blocker_tx.start()
        await blocker.execute("LOCK TABLE projects IN ACCESS SHARE MODE")  # the ALTER waits on it
        applying = asyncio.create_task(upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, db, HEAD, expected))
        for _ in range(200):  # the applier is inside its transaction, version row locked, ALTER waiting
            pid = await admin.fetchval("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' "
                                       "AND query LIKE '%ADD COLUMN archived%'", db)
            if pid:
                break
            await asyncio.sleep(0.05)
        assert pid, "the applier never reached the ALTER"
        await admin.execute("SELECT pg_terminate_backend($1)", pid)  # the server's side of a crash
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await applying
        await blocker_tx.rollback()
        assert await state_of(stack, tenant) == ("t0001", False)
        assert await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, db, HEAD, expected) == HEAD
        assert await state_of(stack, tenant) == (HEAD, True)
    finally:
        await blocker.close()
        await admin.close()


async def test_one_query_apply_when_the_revision_is_expected_and_the_checked_path_when_not(api, stack: Stack):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    db = identifiers.tenant_database(tenant["id"])
    conn = await asyncpg.connect(stack.pg.dsn(db))
    try:
        assert await upgrades.apply_expected(conn, runner.DEMO_TREE, "t0001", "t0001") is None  # nothing to render
        await conn.execute("UPDATE alembic_version SET version_num = 'x0001'")
        assert await upgrades.apply_expected(conn, runner.DEMO_TREE, "t0001", "t0002") is None  # not where expected
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "x0001"
        await conn.execute("UPDATE alembic_version SET version_num = 't0001'")
        assert await upgrades.apply_expected(conn, runner.DEMO_TREE, "t0001", "t0002") == "t0002"
        assert not conn.is_in_transaction()
    finally:
        await conn.close()
    assert await state_of(stack, tenant) == ("t0002", True)
    # a wrong expectation (the catalog said t0001, it is at head already) still ends right
    assert await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, db, HEAD, expected="t0001") == HEAD


async def test_one_query_apply_rolls_back_a_script_that_misses_its_target(api, stack: Stack, monkeypatch):
    tenant, server, box = await tenant_at(api, stack, "t0001")
    real = runner.render_upgrade

    async def without_version_move(*args, **kwargs):
        return (await real(*args, **kwargs)).split("UPDATE alembic_version")[0]

    monkeypatch.setattr(runner, "render_upgrade", without_version_move)
    with pytest.raises(upgrades.UnexpectedRevision):
        await upgrades.upgrade_tenant_database(server, box, runner.DEMO_TREE, identifiers.tenant_database(tenant["id"]), HEAD,
                                               expected="t0001")
    assert await state_of(stack, tenant) == ("t0001", False)
