"""The copy of a move streams rows from the source into the target as they come, a failure on
either side leaves the target table without a single row of the failed copy, and the comparison
tells equal tables from changed ones (by hash, or by md5 where a column type cannot be hashed);
a move that failed for good before its switch is retried from after its plan."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.tiers import layout_of
from migrations.tree import DEMO_TREE
from provisioning.context import StepContext
from provisioning.moves import _stream, abort_move
from provisioning.pipelines import MOVE
from provisioning.sealing import SecretBox
from tests.conftest import SECRET_KEY, catalog_pool
from tests.provisioning.steps.test_catalog import add_server

ROWS = 200_000  # a few dozen MB of COPY data: many chunks through the bounded queue


@pytest.fixture
async def databases(pg) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    names = [f"move_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("src", "dst")]
    admin = await asyncpg.connect(pg.dsn())
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        src, dst = [await asyncpg.connect(pg.dsn(name)) for name in names]
        try:
            await src.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)")
            await src.execute(f"INSERT INTO items SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, {ROWS}) i")
            await dst.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)")
            yield src, dst
        finally:
            await src.close()
            await dst.close()
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_table_is_streamed_whole(databases):
    src, dst = databases
    await _stream(src, "SELECT id, name FROM items", dst, "items", ["id", "name"], "public")
    digest = "SELECT count(*), md5(string_agg(id || name, ',' ORDER BY id)) FROM items"
    assert tuple(await dst.fetchrow(digest)) == tuple(await src.fetchrow(digest))
    assert await dst.fetchval("SELECT count(*) FROM items") == ROWS


async def test_a_source_failing_mid_copy_aborts_the_target_copy(databases):
    src, dst = databases
    # fails once the walk reaches the last row, long after the first chunks went to the target
    query = f"SELECT id, CASE WHEN id = {ROWS} THEN (1 / (id - id))::text ELSE name END FROM items ORDER BY id"
    with pytest.raises(RuntimeError, match="source stopped"):
        await _stream(src, query, dst, "items", ["id", "name"], "public")
    assert await dst.fetchval("SELECT count(*) FROM items") == 0
    assert await src.fetchval("SELECT 1") == 1  # both connections are usable afterwards
    assert await dst.fetchval("SELECT 1") == 1


async def test_a_target_failing_mid_copy_stops_the_source(databases):
    src, dst = databases
    await dst.execute("INSERT INTO items VALUES ($1, 'already here')", ROWS // 2)  # a key the copy collides with
    with pytest.raises(asyncpg.UniqueViolationError):
        await _stream(src, "SELECT id, name FROM items ORDER BY id", dst, "items", ["id", "name"], "public")
    assert await dst.fetchval("SELECT count(*) FROM items") == 1


class _Public:
    """Where a dedicated tenant keeps a table (what _fingerprint asks of a location)."""

    row_filter = ""

    def qualified(self, table: str) -> str:
        return f'"public"."{table}"'

    async def key(self, conn, table: str) -> list[str]:
        return ["id"]


async def test_checksums_agree_on_the_same_rows_and_differ_on_any_change(databases):
    from provisioning.moves import _fingerprints

    src, dst = databases
    await _stream(src, "SELECT id, name FROM items ORDER BY id DESC", dst, "items", ["id", "name"], "public")
    here, there = _Public(), _Public()
    mine, theirs = await _fingerprints(here, src, there, dst, "items", ["id", "name"])
    assert mine == theirs and mine[0] == ROWS  # whatever order the rows were written in
    await dst.execute("UPDATE items SET name = name || '!' WHERE id = 7")
    mine, theirs = await _fingerprints(here, src, there, dst, "items", ["id", "name"])
    assert mine[0] == theirs[0] and mine[1] != theirs[1]


async def test_a_column_type_without_an_extended_hash_is_compared_by_md5_on_both_sides(databases):
    from provisioning.moves import _fingerprint, _fingerprints

    src, dst = databases
    for conn in (src, dst):  # json has no hash function at all
        await conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body json NOT NULL)")
        await conn.execute("INSERT INTO docs SELECT i, json_build_object('n', i) FROM generate_series(1, 100) i")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await _fingerprint(_Public(), src, "docs", ["id", "body"], "hash")
    mine, theirs = await _fingerprints(_Public(), src, _Public(), dst, "docs", ["id", "body"])
    assert mine == theirs and mine[0] == 100 and len(mine[1]) == 32  # an md5
    await dst.execute("""UPDATE docs SET body = '{"n": 0}' WHERE id = 1""")
    mine, theirs = await _fingerprints(_Public(), src, _Public(), dst, "docs", ["id", "body"])
    assert mine != theirs


async def _failed_move(catalog: asyncpg.Pool, *, switched: bool) -> StepContext:
    """A move of a dedicated tenant to the schema tier of another server, failed for good at
    `verify_copy` (steps before it succeeded); placed on the target when `switched`."""
    source_server, target_server = await add_server(catalog, "a-source", 100), await add_server(catalog, "b-target", 100)
    tenant_id, op_id = uuid.uuid4(), uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', 'dedicated', "
                          "'maintenance')", tenant_id, f"t{tenant_id.hex[:12]}")
    tier = "schema" if switched else "dedicated"
    database, role, schema_name = layout_of(tier).names(tenant_id)
    await catalog.execute("INSERT INTO placements (tenant_id, server_id, database_name, role_name, schema_name) "
                          "VALUES ($1, $2, $3, $4, $5)", tenant_id, target_server if switched else source_server,
                          database, role, schema_name)
    params = {"tier": "schema", "source": {"tier": "dedicated", "server_id": str(source_server), "revision": "t0002"},
              "target": {"tier": "schema", "server_id": str(target_server)}}
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state, params) VALUES ($1, 'move_tenant', $2, "
                          "'failed', $3::jsonb)", op_id, tenant_id, json.dumps(params))
    failed_at = MOVE.step_names.index("verify_copy")
    await catalog.executemany(
        "INSERT INTO operation_steps (operation_id, position, name, state, attempts) VALUES ($1, $2, $3, $4, 1)",
        [(op_id, i, name, "succeeded" if i < failed_at else "failed" if i == failed_at else "pending")
         for i, name in enumerate(MOVE.step_names)])

    async def announce(_: uuid.UUID) -> None:
        return None

    return StepContext(operation_id=op_id, tenant_id=tenant_id, params=params, catalog=catalog,
                       secret_key=SECRET_KEY, box=SecretBox(SECRET_KEY), announce=announce, tenant_tree=DEMO_TREE)


async def _abort_and_read_steps(catalog: asyncpg.Pool, ctx: StepContext) -> list[str]:
    """abort_move as the worker runs it after a final failure; then the steps' states."""
    async with catalog.acquire() as conn, conn.transaction():
        await abort_move(conn, ctx)
    return await _states(catalog, ctx)


async def _states(catalog: asyncpg.Pool, ctx: StepContext) -> list[str]:
    return [r["state"] for r in await catalog.fetch(
        "SELECT state FROM operation_steps WHERE operation_id = $1 ORDER BY position", ctx.operation_id)]


async def test_a_move_failed_before_its_switch_is_retried_from_after_its_plan(pg):
    async with catalog_pool(pg, "catalog_abort_move") as catalog:
        ctx = await _failed_move(catalog, switched=False)
        states = await _abort_and_read_steps(catalog, ctx)
        assert await catalog.fetchval("SELECT status FROM tenants WHERE id = $1", ctx.tenant_id) == "active"
        # prepare_target and pause_writes run again on a retry: the undo dropped the target, and
        # writes went on meanwhile
        assert states == ["succeeded", "succeeded", "pending", "pending", "pending", "failed", "pending",
                          "pending"]  # the backup before the move and the plan stand


async def test_a_move_failed_after_its_switch_is_retried_where_it_failed(pg):
    async with catalog_pool(pg, "catalog_abort_move") as catalog:
        ctx = await _failed_move(catalog, switched=True)
        assert await _abort_and_read_steps(catalog, ctx) == ["succeeded"] * 5 + ["failed", "pending", "pending"]
