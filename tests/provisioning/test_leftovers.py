"""The reconciler reports what is still found of erased and deleted tenants on a server, in the
backup store (a folder, and S3 on moto's server) and in Redis; a clean erasure reports nothing; a
store or Redis that cannot be reached is reported unreachable, not clean."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.channels import alias_redis_key, placement_redis_key
from control_plane.embedded import free_port
from provisioning import queue
from provisioning.announcements import redis_client
from provisioning.backups.objects import BackupStore
from provisioning.backups.store import S3Store, open_store
from provisioning.findings import Finding
from provisioning.leftovers import Gone, attribute, gone_tenants
from provisioning.reconcile import Report, reconcile
from provisioning.sealing import SecretBox
from tenant_router.ratelimit import TenantRateLimiter
from tests.conftest import Stack, catalog_pool, unique_slug, wait_for
from tests.provisioning.backups.conftest import bucket, moto_endpoint  # noqa: F401 (fixtures)
from tests.provisioning.test_erasure import active, erased


async def _chunks() -> AsyncIterator[bytes]:
    yield b"encrypted bytes of an old backup"


async def deleted_tenant(api: httpx.AsyncClient, tier: str) -> dict:
    slug = unique_slug("lo")
    tenant = await active(api, slug, "Leftover Person", tier)
    assert (await api.delete(f"/v1/tenants/{tenant['id']}")).status_code == 202
    await wait_for(api, tenant["id"], "deleted")
    return {"id": tenant["id"], "slug": slug}


@pytest.fixture(scope="module")
async def erased_tenant(api: httpx.AsyncClient) -> dict:
    tenant = await deleted_tenant(api, "dedicated")
    assert (await api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202
    await erased(api, tenant["id"])
    return tenant


async def run(stack: Stack, store: BackupStore | None) -> Report:
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        return await reconcile(catalog, SecretBox(stack.settings.secret_key),
                               open_store=(lambda: store) if store is not None else None,
                               redis_url=stack.settings.redis_url)
    finally:
        await catalog.close()


def mine(report: Report, tenant: dict) -> set[tuple[str, str, str]]:
    return {(f.kind, f.server, f.object) for f in report.findings if f.tenant_id == tenant["id"]}


def nothing_personal(report: Report, tenant: dict) -> None:
    for f in report.findings:
        assert tenant["slug"] not in f"{f.object} {f.detail}", f


async def plant_redis(stack: Stack, tenant: dict) -> None:
    """What routers leave: the rate limiter's window (the real limiter's), a placement copy, an alias."""
    assert (await TenantRateLimiter(stack.settings.redis_url).hit(uuid.UUID(tenant["id"]), 60)) is not None
    redis = redis_client(stack.settings.redis_url)
    try:
        await redis.set(placement_redis_key(tenant["id"]), b"{}", ex=600)
        await redis.set(alias_redis_key("slug", tenant["slug"]), tenant["id"])  # no TTL: it would stay
    finally:
        await redis.aclose()


async def clean_redis(stack: Stack, tenant: dict) -> None:
    redis = redis_client(stack.settings.redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"tenantplane:*{tenant['id']}*")]
        await redis.delete(alias_redis_key("slug", tenant["slug"]), *keys)
    finally:
        await redis.aclose()


async def test_a_clean_erasure_reports_nothing(api: httpx.AsyncClient, erased_tenant: dict):
    report = (await api.post("/v1/reconciliation")).json()  # the API's reconciler: the stack's store and Redis
    assert report["places_checked"] == ["store", "redis"] and report["places_unreachable"] == []
    assert report["leftovers_checked"]["erased_tenants"] >= 1
    assert [f for f in report["findings"] if f["tenant_id"] == erased_tenant["id"]] == []


@pytest.mark.parametrize("where", ["file", "s3"])
async def test_leftovers_of_an_erased_tenant_are_reported(where: str, stack: Stack, erased_tenant: dict,
                                                          request: pytest.FixtureRequest):
    tid = erased_tenant["id"]
    store: BackupStore = open_store(stack.settings.backup_store_url) if where == "file" else \
        S3Store(request.getfixturevalue("bucket"), endpoint_url=request.getfixturevalue("moto_endpoint"))
    key = f"tenants/{tid}/backups/{uuid.uuid4()}.tpbk"
    database = identifiers.tenant_database(tid)
    admin = await asyncpg.connect(stack.pg.dsn())
    try:  # an old copy comes back: a backup object, a database, Redis keys
        await store.write(key, _chunks())
        await admin.execute(f"CREATE DATABASE {identifiers.quote(database)}")
        await plant_redis(stack, erased_tenant)

        report = await run(stack, store)
        assert report.places_checked == ["store", "redis"] and report.places_unreachable == []
        assert mine(report, erased_tenant) == {
            ("erased_leftover", "store", f"tenants/{tid}/"), ("erased_leftover", "local", database),
            ("erased_leftover", "redis", "placement"), ("erased_leftover", "redis", "alias:slug"),
            ("erased_leftover", "redis", "ratelimit")}
        found = {f.object: f for f in report.findings if f.tenant_id == tid}
        assert found[f"tenants/{tid}/"].detail.startswith(f"1 object(s), 32 bytes, of an erased tenant still in the {where}")
        assert found[database].detail == "orphan_database of an erased tenant"
        assert "never expires" in found["alias:slug"].detail and "expire within" in found["placement"].detail
        nothing_personal(report, erased_tenant)
    finally:
        await store.delete(key)
        await admin.execute(f"DROP DATABASE IF EXISTS {identifiers.quote(database)}")
        await admin.close()
        await clean_redis(stack, erased_tenant)
    assert mine(await run(stack, store), erased_tenant) == set()


async def test_leftovers_of_a_deleted_tenant_are_reported_but_not_its_backups(stack: Stack, api: httpx.AsyncClient):
    tenant = await deleted_tenant(api, "schema")
    tid = tenant["id"]
    store = open_store(stack.settings.backup_store_url)
    key = f"tenants/{tid}/backups/{uuid.uuid4()}.tpbk"
    schema = identifiers.tenant_schema(tid)
    schemas = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
    try:  # its live data back on the server (a schema), Redis keys, and a backup (kept on purpose)
        await store.write(key, _chunks())
        await schemas.execute(f"CREATE SCHEMA {identifiers.quote(schema)}")
        await plant_redis(stack, tenant)

        report = await run(stack, store)
        assert report.leftovers_checked.deleted_tenants >= 1
        assert mine(report, tenant) == {
            ("deleted_leftover", "local", schema), ("deleted_leftover", "redis", "placement"),
            ("deleted_leftover", "redis", "alias:slug"), ("deleted_leftover", "redis", "ratelimit")}
        nothing_personal(report, tenant)
    finally:
        await store.delete(key)
        await schemas.execute(f"DROP SCHEMA IF EXISTS {identifiers.quote(schema)}")
        await schemas.close()
        await clean_redis(stack, tenant)


async def test_a_store_or_redis_that_cannot_be_reached_is_unreachable_not_clean(
        stack: Stack, erased_tenant: dict, moto_endpoint: str):  # noqa: F811 (the fixture)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    box = SecretBox(stack.settings.secret_key)
    down = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    try:
        missing_bucket = await reconcile(catalog, box, redis_url=down, open_store=lambda: S3Store(
            f"tp-missing-{uuid.uuid4().hex[:8]}", endpoint_url=moto_endpoint))
        unopenable = await reconcile(catalog, box, open_store=lambda: open_store("ftp://nowhere/backups"))
    finally:
        await catalog.close()
    assert missing_bucket.places_unreachable == ["store", "redis"] and missing_bucket.places_checked == []
    assert not missing_bucket.clean
    assert unopenable.places_unreachable == ["store"] and unopenable.places_checked == []
    assert "local" in missing_bucket.servers_checked  # the servers are still checked


def test_only_orphans_and_restore_leftovers_naming_a_gone_tenant_become_its_leftovers():
    deleted, erased_id, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    gone = Gone(erased=frozenset({erased_id}), deleted=frozenset({deleted}))
    found = attribute([
        Finding(kind="orphan_rows", server="a", object=identifiers.SHARED_DATABASE, tenant_id=deleted,
                detail="tables: projects"),
        Finding(kind="restore_leftover", server="a", object="tp_rs_x", tenant_id=erased_id, detail="staging"),
        Finding(kind="orphan_role", server="a", object="tp_role_y", tenant_id=other),
        Finding(kind="revision_drift", server="a", object="tp_db_z", tenant_id=deleted),
    ], gone)
    assert [(f.kind, f.detail) for f in found] == [
        ("deleted_leftover", "orphan_rows of a deleted tenant: tables: projects"),
        ("erased_leftover", "restore_leftover of an erased tenant: staging"),
        ("orphan_role", ""), ("revision_drift", "")]


async def test_a_tenant_whose_erasure_runs_is_the_sagas_and_one_whose_erasure_failed_counts_as_deleted(pg):
    async with catalog_pool(pg, f"catalog_leftovers_{uuid.uuid4().hex[:6]}") as catalog:
        ids = {what: uuid.uuid4() for what in ("live", "deleted", "erasing", "failed", "erased")}
        for what, tid in ids.items():
            await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, '', 'dedicated', $3)",
                                  tid, f"lo{tid.hex[:12]}", "active" if what == "live" else "deleted")
        for what in ("erasing", "failed", "erased"):
            await catalog.execute("INSERT INTO tenant_erasures (tenant_id, completed_at) VALUES ($1, $2)",
                                  ids[what], dt.datetime.now(dt.timezone.utc) if what == "erased" else None)
        await queue.enqueue(catalog, "erase_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=ids["erasing"]))
        gone = await gone_tenants(catalog)
    assert gone.erased == {str(ids["erased"])}
    assert gone.deleted == {str(ids["deleted"]), str(ids["failed"])}
