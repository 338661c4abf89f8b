"""`POST /v1/tenants/{id}/keys/rewrap` (moto's KMS over HTTP, a real worker): a tenant's data key made
before BACKUP_KMS_KEY_PER_TENANT was on is moved under the tenant's own KMS key, its backup still
drills; a rerun moves nothing; an API without the setting moves it back under the local master key,
and the next per-tenant rewrap reuses the same KMS key. Audited; destroyed keys 409, an unknown
tenant 404, KMS unreachable 503 (nothing moved); no KMS key is made for destroyed keys. The API's
reconciler lists the KMS account only with per-tenant keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from control_plane.embedded import free_port
from provisioning.backups.store import aws_client
from provisioning.backups.tenant_kms import TAG_KEY, alias_of
from tests.conftest import Stack, admin_client, unique_slug
from tests.provisioning import test_erasure_kms as erasure_kms
from tests.provisioning.backups.conftest import moto_endpoint  # noqa: F401 (the moto server, as the backup tests')
from tests.provisioning.test_erasure import _op_done, active
from tests.provisioning.test_erasure_kms import kms_env, kms_stack_running  # noqa: F401 (kms_env: a fixture)


@pytest.fixture(scope="module")
async def kms_stack(pg, redis_server, kms_env) -> AsyncIterator[Stack]:  # noqa: F811
    async with kms_stack_running(pg, redis_server.url, kms_env, "catalog_keys_rewrap") as stack:
        yield stack


kms_api = erasure_kms.kms_api


@pytest.fixture(scope="module")
async def local_api(kms_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The same catalog's API without per-tenant KMS keys: the local master key wraps."""
    local = Stack(settings=msgspec.structs.replace(kms_stack.settings, backup_kms_key_per_tenant=False),
                  pg=kms_stack.pg)
    async with admin_client(local) as client:
        yield client


@pytest.fixture
def kms(moto_endpoint: str) -> Any:  # noqa: F811
    return aws_client("kms", endpoint_url=moto_endpoint)


async def wrappers(stack: Stack, tenant_id: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        return {tuple(r) for r in await conn.fetch(
            "SELECT wrapper_kind, wrapper_key_id FROM tenant_keys WHERE tenant_id = $1::uuid", tenant_id)}
    finally:
        await conn.close()


async def audited(stack: Stack, tenant_id: str) -> list[dict]:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        return [msgspec.json.decode(r["details"]) for r in await conn.fetch(
            "SELECT details::text AS details FROM audit_log WHERE action = 'tenant.keys.rewrap' "
            "AND target_id = $1 ORDER BY id", tenant_id)]
    finally:
        await conn.close()


def tagged(kms: Any, tenant_id: str) -> list[str]:
    return sorted(e["KeyArn"] for e in kms.list_keys(Limit=1000)["Keys"]
                  if {"TagKey": TAG_KEY, "TagValue": tenant_id} in kms.list_resource_tags(KeyId=e["KeyId"])["Tags"])


async def test_rewrap_moves_a_tenants_keys_under_its_own_kms_key_and_back(
        kms_stack: Stack, kms_api: httpx.AsyncClient, local_api: httpx.AsyncClient, kms: Any):
    tenant = await active(kms_api, unique_slug("rw"), "Rewrap", "dedicated")
    tid = tenant["id"]
    # a key made before the setting was on (the local master key), and a backup under it
    assert (await local_api.post(f"/v1/tenants/{tid}/keys/rotate")).json()["current_version"] == 1
    b = await kms_api.post(f"/v1/tenants/{tid}/backups")
    assert (await _op_done(kms_api, b.json()["operation_id"]))["state"] == "succeeded"
    [(kind, _)] = await wrappers(kms_stack, tid)
    assert kind == "local" and tagged(kms, tid) == []

    moved = await kms_api.post(f"/v1/tenants/{tenant['slug']}/keys/rewrap")
    assert moved.status_code == 200, moved.text
    body = moved.json()
    [arn] = tagged(kms, tid)
    assert (body["rewrapped_versions"], body["wrapper_kind"], body["kms_key_id"]) == (1, "kms_tenant", arn)
    assert [v["wrapper_kind"] for v in body["versions"]] == ["kms_tenant"]
    assert await wrappers(kms_stack, tid) == {("kms_tenant", arn)}
    assert kms.describe_key(KeyId=alias_of(tid))["KeyMetadata"]["Arn"] == arn
    again = (await kms_api.post(f"/v1/tenants/{tid}/keys/rewrap")).json()
    assert (again["rewrapped_versions"], again["kms_key_id"]) == (0, arn)  # idempotent

    # the backup's data key did not change: a drill still decrypts it
    drill = await kms_api.post(f"/v1/backups/{b.json()['backup']['id']}/verify")
    assert (await _op_done(kms_api, drill.json()["operation_id"]))["state"] == "succeeded"

    # without the setting the current wrapper is the local master key; back again: the same KMS key
    back = (await local_api.post(f"/v1/tenants/{tid}/keys/rewrap")).json()
    assert (back["rewrapped_versions"], back["wrapper_kind"], back["kms_key_id"]) == (1, "local", None)
    assert {k for k, _ in await wrappers(kms_stack, tid)} == {"local"}
    assert (await kms_api.post(f"/v1/tenants/{tid}/keys/rewrap")).json()["rewrapped_versions"] == 1
    assert tagged(kms, tid) == [arn] and await wrappers(kms_stack, tid) == {("kms_tenant", arn)}

    assert [(a["versions"], a["wrapper_kind"]) for a in await audited(kms_stack, tid)] == \
        [(1, "kms_tenant"), (0, "kms_tenant"), (1, "local"), (1, "kms_tenant")]


async def test_a_tenant_without_keys_gets_no_kms_key(kms_api: httpx.AsyncClient, kms: Any):
    tenant = await active(kms_api, unique_slug("rn"), "No keys", "shared")
    body = (await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/rewrap")).json()
    assert (body["rewrapped_versions"], body["versions"], body["kms_key_id"]) == (0, [], None), body
    assert tagged(kms, tenant["id"]) == []


async def test_rewrap_refuses_destroyed_keys_and_unknown_tenants(kms_api: httpx.AsyncClient):
    tenant = await active(kms_api, unique_slug("rd"), "Destroyed", "schema")
    assert (await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")).status_code == 200
    assert (await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})).status_code == 200
    refused = await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/rewrap")
    assert refused.status_code == 409 and refused.json()["code"] == "backup_keys_destroyed", refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_no_kms_key_is_made_for_a_tenant_whose_keys_were_destroyed(
        kms_api: httpx.AsyncClient, local_api: httpx.AsyncClient, kms: Any):
    tenant = await active(kms_api, unique_slug("rk"), "Shredded", "shared")
    assert (await local_api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")).status_code == 200
    assert (await local_api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})).status_code == 200
    for action in ("rotate", "rewrap"):
        r = await kms_api.post(f"/v1/tenants/{tenant['id']}/keys/{action}")
        assert r.status_code == 409 and r.json()["code"] == "backup_keys_destroyed", (action, r.text)
    assert tagged(kms, tenant["id"]) == []


async def test_the_reconciler_lists_the_kms_account_only_with_per_tenant_keys(
        kms_api: httpx.AsyncClient, local_api: httpx.AsyncClient):
    with_kms = (await kms_api.post("/v1/reconciliation")).json()
    assert "kms" in with_kms["places_checked"] and "kms" not in with_kms["places_unreachable"], with_kms
    without = (await local_api.post("/v1/reconciliation")).json()
    assert "kms" not in without["places_checked"] + without["places_unreachable"], without
    for key in ("no-such-tenant", "00000000-0000-0000-0000-000000000000", "x" * 300, "%27%3B--"):
        r = await kms_api.post(f"/v1/tenants/{key}/keys/rewrap")
        assert r.status_code in (404, 422) and r.json()["code"], (key, r.text)


async def test_kms_unreachable_is_503_and_moves_nothing(kms_stack: Stack, local_api: httpx.AsyncClient):
    tenant = await active(local_api, unique_slug("ru"), "Unreachable", "shared")
    assert (await local_api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")).status_code == 200
    before = await wrappers(kms_stack, tenant["id"])
    saved = os.environ["AWS_ENDPOINT_URL_KMS"]
    os.environ["AWS_ENDPOINT_URL_KMS"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        async with admin_client(kms_stack) as down:
            r = await down.post(f"/v1/tenants/{tenant['id']}/keys/rewrap")
    finally:
        os.environ["AWS_ENDPOINT_URL_KMS"] = saved
    assert r.status_code == 503 and r.json()["code"] == "key_service_unavailable", r.text
    assert await wrappers(kms_stack, tenant["id"]) == before
