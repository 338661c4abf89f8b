"""The shared tier's archive of one tenant's rows: only that tenant's, one snapshot, checked on
load against the manifest; loaded into a shared database (the same tenant, or a clone under a new
id) or a dedicated one; cut, changed or out-of-place archives are refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from control_plane.embedded import EmbeddedPostgres
from migrations import runner
from provisioning.backups.crypto import PAYLOAD_SHARED_ARCHIVE, decrypt, encrypt, read_header
from provisioning.backups.keys import DataKey
from provisioning.backups.shared_archive import ArchiveError, load_archive, write_archive
from provisioning.backups.store import FileStore
from tests.provisioning.backups.conftest import chunks_of, collect, fresh_database


async def migrated(pg: EmbeddedPostgres, tier: str, revision: str = "head") -> str:
    name = await fresh_database(pg, f"bk{tier}")
    await runner.upgrade(runner.DEMO_TREE, pg.dsn(name), revision, tier=tier)
    return name


async def add_rows(conn: asyncpg.Connection, tenant: uuid.UUID, count: int) -> None:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant))
        await conn.execute("INSERT INTO projects (name, archived) SELECT 'r' || g, g % 3 = 0 "
                           "FROM generate_series(1, $1) g", count)


async def rows_of(conn: asyncpg.Connection, tenant: uuid.UUID | None = None) -> list[tuple]:
    where = " WHERE tenant_id = $1" if tenant else ""
    found = await conn.fetch(f"SELECT id, name, archived, created_at FROM projects{where} ORDER BY id",
                             *([tenant] if tenant else []))
    return [tuple(r) for r in found]


@pytest.fixture(scope="module")
async def shared_source(pg: EmbeddedPostgres):
    """A shared database holding tenants A (500 rows) and B (300 rows); the archive of A."""
    name = await migrated(pg, "shared")
    a, b = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(pg.dsn(name))
    try:
        await add_rows(conn, a, 250)
        await add_rows(conn, b, 300)
        await add_rows(conn, a, 250)
        archive = await collect(write_archive(conn, a))
        expected = await rows_of(conn, a)
    finally:
        await conn.close()
    return name, a, b, archive, expected


async def test_round_trip_encrypted_into_a_fresh_shared_database(pg: EmbeddedPostgres, shared_source,
                                                                 tmp_path: Path) -> None:
    _, a, _, archive, expected = shared_source
    key, backup = DataKey(a, 1, b"k" * 32), uuid.uuid4()
    store = FileStore(tmp_path)
    await store.write("a.tpbk", encrypt(chunks_of(archive), key, backup, payload=PAYLOAD_SHARED_ARCHIVE))
    header, _ = await read_header(store.read("a.tpbk"))
    assert header.payload == PAYLOAD_SHARED_ARCHIVE

    async def keys(tenant_id, version):
        return key

    target = await migrated(pg, "shared")
    conn = await asyncpg.connect(pg.dsn(target))
    try:
        recorded = await load_archive(decrypt(store.read("a.tpbk"), keys, tenant_id=a), conn, tenant_id=a)
        assert [(t.name, t.rows) for t in recorded.tables] == [("projects", 500)]
        assert recorded.tier == "shared" and recorded.tenant_id == str(a) and recorded.revision == runner.head(runner.DEMO_TREE)
        assert await rows_of(conn) == expected  # A's rows, and nobody else's
        assert await conn.fetchval("SELECT count(DISTINCT tenant_id) FROM projects") == 1
        with pytest.raises(ArchiveError, match="already holds rows"):
            await load_archive(chunks_of(archive), conn, tenant_id=a)
        # new rows continue after the loaded ids
        await add_rows(conn, a, 1)
        assert (await rows_of(conn, a))[-1][0] > expected[-1][0]
    finally:
        await conn.close()


async def test_a_clone_under_another_id_in_the_same_shared_database(pg: EmbeddedPostgres, shared_source) -> None:
    source, a, _, archive, expected = shared_source
    clone = uuid.uuid4()
    conn = await asyncpg.connect(pg.dsn(source))
    try:
        await load_archive(chunks_of(archive, 7777), conn, tenant_id=clone)
        assert [r[1:] for r in await rows_of(conn, clone)] == [r[1:] for r in expected]
    finally:
        await conn.close()


async def test_into_a_dedicated_database(pg: EmbeddedPostgres, shared_source) -> None:
    _, _, _, archive, expected = shared_source
    target = await migrated(pg, "dedicated")
    conn = await asyncpg.connect(pg.dsn(target))
    try:
        await load_archive(chunks_of(archive), conn)
        assert await rows_of(conn) == expected
    finally:
        await conn.close()


async def test_bad_archives_are_refused_and_leave_nothing(pg: EmbeddedPostgres, shared_source) -> None:
    _, a, _, archive, _ = shared_source
    target = await migrated(pg, "shared")
    old = await migrated(pg, "shared", "t0001")
    conn = await asyncpg.connect(pg.dsn(target))
    try:
        for cut in (1, 5, len(archive) // 2):
            with pytest.raises((ArchiveError, asyncpg.PostgresError)):
                await load_archive(chunks_of(archive[:-cut]), conn, tenant_id=a)
        changed = bytearray(archive)
        changed[len(archive) // 2] ^= 0x10  # inside a row: the checksum disagrees (or COPY refuses)
        with pytest.raises((ArchiveError, asyncpg.PostgresError)):
            await load_archive(chunks_of(bytes(changed)), conn, tenant_id=a)
        with pytest.raises(ArchiveError, match="end"):
            await load_archive(chunks_of(archive + b"x"), conn, tenant_id=a)
        with pytest.raises(ArchiveError, match="not a shared-tier archive"):
            await load_archive(chunks_of(b"PGDMP" + archive[5:]), conn, tenant_id=a)
        with pytest.raises(ArchiveError, match="needs the tenant id"):
            await load_archive(chunks_of(archive), conn)
        assert await conn.fetchval("SELECT count(*) FROM projects") == 0  # each attempt rolled back
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg.dsn(old))
    try:
        with pytest.raises(ArchiveError, match="revision"):
            await load_archive(chunks_of(archive), conn, tenant_id=a)
    finally:
        await conn.close()
