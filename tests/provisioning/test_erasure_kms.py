"""Per-tenant KMS keys end to end (BACKUP_KMS_KEY_PER_TENANT, moto's KMS over HTTP, real workers):
two tenants' backups under two KMS keys; erasure schedules the erased tenant's key for deletion
with BACKUP_KMS_DELETION_WINDOW_DAYS and the report's `data_key` says so; a backup of the erased
tenant put back can never be restored, although KMS (moto) would still decrypt its data key; the
admin "destroy keys" path schedules the deletion too."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import msgspec
import pytest

from provisioning.backups.keys import _context
from provisioning.backups.store import aws_client
from tests.conftest import Stack, admin_client, make_stack, stop_process, unique_slug
from tests.provisioning.backups.conftest import moto_endpoint  # noqa: F401 (the moto server, as the backup tests')
from tests.provisioning.test_erasure import _op_done, active, assert_nothing_left, erased, offboarded_tenant

WINDOW_DAYS = 8


@pytest.fixture(scope="module")
def kms_env(moto_endpoint: str) -> Iterator[dict[str, str]]:  # noqa: F811
    """What the workers are given, and the endpoint for this process's API (boto3 reads it)."""
    saved = os.environ.get("AWS_ENDPOINT_URL_KMS")
    os.environ["AWS_ENDPOINT_URL_KMS"] = moto_endpoint
    try:
        yield {"AWS_ENDPOINT_URL_KMS": moto_endpoint, "BACKUP_KMS_KEY_PER_TENANT": "true",
               "BACKUP_KMS_DELETION_WINDOW_DAYS": str(WINDOW_DAYS)}
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL_KMS", None)
        else:
            os.environ["AWS_ENDPOINT_URL_KMS"] = saved


async def kms_stack_on(pg: Any, redis_url: str, name: str) -> Stack:
    base = await make_stack(pg, redis_url, name)
    return Stack(settings=msgspec.structs.replace(base.settings, backup_kms_key_per_tenant=True,
                                                  backup_kms_deletion_window_days=WINDOW_DAYS), pg=pg)


@asynccontextmanager
async def kms_stack_running(pg: Any, redis_url: str, kms_env: dict[str, str], name: str) -> AsyncIterator[Stack]:
    """A per-tenant-keys stack on a catalog of its own, with a worker of those settings running."""
    stack = await kms_stack_on(pg, redis_url, name)
    worker = stack.start_worker(**kms_env)
    try:
        yield stack
    finally:
        stop_process(worker)


@pytest.fixture(scope="module")
async def kms_stack(pg, redis_server, kms_env) -> AsyncIterator[Stack]:
    async with kms_stack_running(pg, redis_server.url, kms_env, "catalog_erasure_kms") as stack:
        yield stack


@pytest.fixture(scope="module")
async def kms_api(kms_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(kms_stack) as client:
        yield client


@pytest.fixture
def kms(moto_endpoint: str) -> Any:  # noqa: F811
    return aws_client("kms", endpoint_url=moto_endpoint)


async def kms_key_of(stack: Stack, tenant_id: str) -> str:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        key_id = await conn.fetchval("SELECT key_id FROM tenant_kms_keys WHERE tenant_id = $1::uuid", tenant_id)
        wrappers = await conn.fetch("SELECT DISTINCT wrapper_kind, wrapper_key_id FROM tenant_keys "
                                    "WHERE tenant_id = $1::uuid", tenant_id)
    finally:
        await conn.close()
    assert key_id and [tuple(w) for w in wrappers] == [("kms_tenant", key_id)], (key_id, wrappers)
    return key_id


def assert_scheduled(report_date: str | dt.datetime, kms: Any, key_id: str) -> None:
    when = report_date if isinstance(report_date, dt.datetime) else dt.datetime.fromisoformat(report_date)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["DeletionDate"] == when
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=WINDOW_DAYS)
    assert abs(when - expected) < dt.timedelta(minutes=10), when
    assert kms.list_aliases(KeyId=key_id)["Aliases"] == []


async def test_erasure_schedules_the_tenants_kms_key_and_its_backups_never_come_back(
        kms_stack: Stack, kms_api: httpx.AsyncClient, kms: Any):
    bystander = await active(kms_api, unique_slug("kb"), "Bystander", "dedicated")
    b = await kms_api.post(f"/v1/tenants/{bystander['id']}/backups")
    assert (await _op_done(kms_api, b.json()["operation_id"]))["state"] == "succeeded"
    tenant = await offboarded_tenant(kms_stack, kms_api, "dedicated")
    key_id, theirs = await kms_key_of(kms_stack, tenant["id"]), await kms_key_of(kms_stack, bystander["id"])
    assert key_id != theirs  # two tenants' backups, two KMS keys
    assert kms.describe_key(KeyId=f"alias/tenantplane/{tenant['id']}")["KeyMetadata"]["Arn"] == key_id

    # what someone kept before the erasure: the backup's row, its object, the wrapped data key
    catalog = await asyncpg.connect(kms_stack.catalog_dsn)
    try:
        row = await catalog.fetchval("SELECT row_to_json(b)::text FROM backups b WHERE tenant_id = $1::uuid",
                                     tenant["id"])
        wrapped = await catalog.fetchval("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1::uuid",
                                         tenant["id"])
    finally:
        await catalog.close()
    root = Path(urlsplit(kms_stack.settings.backup_store_url).path)
    kept = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and tenant["id"] in str(p)}
    assert len(kept) == 2  # the object and its sidecar

    assert (await kms_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202
    report = await erased(kms_api, tenant["id"])
    data_key = {p["place"]: p for p in report["places"]}["data_key"]
    assert data_key["done"] and data_key["details"]["removed"] == 1, data_key
    assert data_key["details"]["kms_key_id"] == key_id
    assert data_key["details"]["kms_deletion_window_days"] == WINDOW_DAYS
    assert_scheduled(data_key["details"]["kms_deletion_date"], kms, key_id)
    assert kms.describe_key(KeyId=theirs)["KeyMetadata"]["KeyState"] == "Enabled"  # the bystander's stays
    await assert_nothing_left(kms_stack, tenant)
    assert (await kms_api.post(f"/v1/tenants/{tenant['id']}/erasure")).json() == report
    await reconciler_reports_an_unscheduled_kms_key(kms_stack, kms_api, tenant["id"])

    # KMS would still unwrap the data key (moto decrypts with a key pending deletion) ...
    assert len(kms.decrypt(CiphertextBlob=wrapped, KeyId=key_id,
                           EncryptionContext=_context(uuid.UUID(tenant["id"]), 1))["Plaintext"]) == 32
    # ... yet the backup, put back with its row, restores nowhere: our catalog says its key was destroyed
    for path, data in kept.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    catalog = await asyncpg.connect(kms_stack.catalog_dsn)
    try:
        await catalog.execute("INSERT INTO backups SELECT * FROM json_populate_record(NULL::backups, $1::json)", row)
        backup_id = msgspec.json.decode(row)["id"]
        clone = await kms_api.post("/v1/tenants", json={"slug": unique_slug("kc"), "name": "Clone", "tier": "dedicated",
                                                        "from_backup": backup_id})
        assert clone.status_code == 202, clone.text
        op = await _op_done(kms_api, clone.json()["operation_id"])
        assert op["state"] == "failed" and "destroyed" in op["error"], op
    finally:
        await catalog.execute("DELETE FROM backups WHERE tenant_id = $1::uuid", tenant["id"])
        await catalog.close()
        for path in kept:
            path.unlink(missing_ok=True)


async def reconciler_reports_an_unscheduled_kms_key(stack: Stack, api: httpx.AsyncClient, tenant_id: str) -> None:
    def mine(report: dict) -> set:
        return {(f["kind"], f["object"]) for f in report["findings"] if f["tenant_id"] == tenant_id}

    assert ("erased_leftover", "kms_key") not in mine((await api.post("/v1/reconciliation")).json())
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:  # as if the deletion had never been scheduled (say, a catalog restored from before it)
        when = await catalog.fetchval("UPDATE tenant_kms_keys SET deletion_date = NULL WHERE tenant_id = $1::uuid "
                                      "RETURNING (SELECT deletion_date FROM tenant_kms_keys WHERE tenant_id = $1::uuid)",
                                      tenant_id)
        try:
            assert ("erased_leftover", "kms_key") in mine((await api.post("/v1/reconciliation")).json())
        finally:
            await catalog.execute("UPDATE tenant_kms_keys SET deletion_date = $2 WHERE tenant_id = $1::uuid",
                                  tenant_id, when)
    finally:
        await catalog.close()


async def test_destroying_keys_through_the_api_schedules_the_kms_key(kms_stack: Stack, kms_api: httpx.AsyncClient,
                                                                     kms: Any):
    tenant = await active(kms_api, unique_slug("kd"), "Destroy", "schema")
    b = await kms_api.post(f"/v1/tenants/{tenant['id']}/backups")
    backup = (await kms_api.get(f"/v1/backups/{b.json()['backup']['id']}")).json()
    assert (await _op_done(kms_api, b.json()["operation_id"]))["state"] == "succeeded"
    rotated = await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")  # from the API: the same KMS key
    assert rotated.status_code == 200 and rotated.json()["current_version"] == 2, rotated.text
    key_id = await kms_key_of(kms_stack, tenant["id"])

    done = await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["destroyed_versions"] == 2 and body["kms_key_id"] == key_id
    assert_scheduled(dt.datetime.fromisoformat(body["kms_deletion_date"]), kms, key_id)
    again = (await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})).json()
    assert (again["destroyed_versions"], again["kms_key_id"], again["kms_deletion_date"]) == \
        (0, key_id, body["kms_deletion_date"])

    restore = await kms_api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup["id"]})
    assert restore.status_code == 202, restore.text
    op = await _op_done(kms_api, restore.json()["operation_id"])
    assert op["state"] == "failed" and "destroyed" in op["error"], op
    assert (await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")).json()["code"] == "backup_keys_destroyed"
