"""The copy of a move streams rows from the source into the target as they come, and a failure
on either side leaves the target table without a single row of the failed copy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from provisioning.steps.move import _stream

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
