"""Processes given different tenant trees (TENANT_MIGRATIONS): the first API or worker records its
tree in the catalog; a later one with another tree (an unrelated one, an older one, or the same
head with other content) refuses to start, naming the variable; a later release of the recorded
tree starts and becomes the record."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from migrations.tree import DEMO_TREE, DEMO_VERSIONS, TenantTree, load_tenant_tree
from provisioning import tree_check
from provisioning.config import WorkerConfig
from provisioning.worker import Worker
from tests.conftest import ROOT, Stack, make_stack

APP_TREE = ROOT / "tests" / "migrations" / "app_tree_good"


@pytest.fixture
async def own_stack(pg, redis_server, request) -> Stack:
    """A catalog of this test's own: the record is per catalog, the session's has the demo tree."""
    return await make_stack(pg, redis_server.url, f"catalog_tree_{request.node.name[-40:].lower()}")


async def _recorded(stack: Stack) -> tuple[str, str] | None:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        return await tree_check.recorded(conn)
    finally:
        await conn.close()


def _later_release(tmp_path: Path) -> TenantTree:
    """The demo's revisions and one more after them."""
    folder = tmp_path / "release"
    shutil.copytree(DEMO_VERSIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "0003_more.py").write_text(
        'revision = "t0003"\ndown_revision = "t0002"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")
    return load_tenant_tree(str(folder))


async def test_a_worker_process_with_another_tree_than_the_api_refuses_to_start(own_stack: Stack):
    async with AsyncTestClient(create_app(own_stack.settings)) as client:  # the API: the demo tree
        assert (await client.get("/health/live")).status_code == 200
    assert await _recorded(own_stack) == (DEMO_TREE.head(), DEMO_TREE.identity())

    worker = own_stack.start_worker(capture=True, TENANT_MIGRATIONS=str(APP_TREE))
    try:
        out, _ = await asyncio.to_thread(worker.communicate, timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1, out
    assert "TENANT_MIGRATIONS" in out and "head t0001" in out and "head t0002" in out, out
    assert "Traceback" not in out, out
    assert await _recorded(own_stack) == (DEMO_TREE.head(), DEMO_TREE.identity())  # unchanged


async def test_an_api_with_another_tree_than_the_workers_refuses_to_start(own_stack: Stack):
    worker_config = own_stack.settings.worker_config()
    conn = await asyncpg.connect(own_stack.catalog_dsn)
    try:
        await tree_check.agree_on_tree(conn, worker_config.tenant_tree, "worker")  # what a worker does first
    finally:
        await conn.close()
    other = msgspec.structs.replace(own_stack.settings, tenant_tree=load_tenant_tree(str(APP_TREE)))
    with pytest.raises(ExceptionGroup) as raised:  # the lifespan's error, as the test client reports it
        async with AsyncTestClient(create_app(other)):
            pass
    assert raised.group_contains(tree_check.TenantTreeMismatch, match="TENANT_MIGRATIONS: this API's", depth=None)


async def test_a_later_release_starts_and_then_the_older_tree_is_refused(own_stack: Stack, tmp_path):
    release = _later_release(tmp_path)
    assert release.revisions()[1:] == DEMO_TREE.revisions()
    stop = asyncio.Event()
    stop.set()  # run() returns once it has checked the tree and started
    base = WorkerConfig(catalog_dsn=own_stack.catalog_dsn, secret_key=own_stack.settings.secret_key)
    await Worker(base).run(stop)  # the demo tree: recorded
    await Worker(msgspec.structs.replace(base, tenant_tree=release)).run(stop)  # its later release
    assert await _recorded(own_stack) == ("t0003", release.identity())
    with pytest.raises(tree_check.TenantTreeMismatch, match="head t0002"):
        await Worker(base).run(stop)  # an old worker started after the release: refused


async def test_the_same_head_with_other_content_is_refused(own_stack: Stack, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(DEMO_VERSIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / "0002_projects_archived.py"
    path.write_text(path.read_text().replace('"archived"', '"is_archived"'))
    edited = load_tenant_tree(str(folder))
    assert edited.head() == DEMO_TREE.head() and edited.identity() != DEMO_TREE.identity()
    conn = await asyncpg.connect(own_stack.catalog_dsn)
    try:
        await tree_check.agree_on_tree(conn, DEMO_TREE, "worker")
        with pytest.raises(tree_check.TenantTreeMismatch, match="content"):
            await tree_check.agree_on_tree(conn, edited, "worker")
    finally:
        await conn.close()


def test_the_cli_worker_names_the_variable_for_a_folder_that_is_not_a_tree(tmp_path):
    out = subprocess.run([sys.executable, "-m", "control_plane.cli", "worker"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TENANT_MIGRATIONS": str(tmp_path / "no"),
                              "CATALOG_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/c",
                              "SECRET_KEY": "a-random-enough-secret-" + "abcdefghijklmnop"})
    assert out.returncode == 1 and "TENANT_MIGRATIONS=" in out.stderr and "is not a folder" in out.stderr, out


def test_a_release_that_only_rewords_comments_is_the_same_tree(tmp_path):
    folder = tmp_path / "reworded"
    shutil.copytree(DEMO_VERSIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / "0002_projects_archived.py"
    path.write_text(path.read_text().replace("an additive change", "a compatible change") + "# a comment\n")
    assert load_tenant_tree(str(folder)).identity() == DEMO_TREE.identity()
