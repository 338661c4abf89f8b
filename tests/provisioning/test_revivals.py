"""A deleted (not erased) tenant restored from one of its backups (`POST /v1/tenants/{id}/restore`
on a deleted tenant): it comes back under its id and slug, on every tier, with the data of dump
time, hardened, routed again, announced by a `tenant.restored` event and audited; an erased tenant,
another tenant's backup, destroyed keys, a slug taken meanwhile and an owed cancellation are refused
with their codes, and nothing is queued."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import Stack, wait_for
from tests.provisioning.test_backup_restore import (
    add_project,
    create_tenant,
    finished,
    hardened,
    no_leftovers,
    projects,
    take_backup,
)


async def deleted_with_backup(api: httpx.AsyncClient, app: httpx.AsyncClient, tier: str) -> tuple[dict, dict]:
    """A tenant with projects kept-1 and kept-2 in a backup, a project written after it, then deleted."""
    tenant = await create_tenant(api, tier)
    await add_project(app, tenant["slug"], "kept-1")
    await add_project(app, tenant["slug"], "kept-2")
    backup = await take_backup(api, tenant["id"])
    await add_project(app, tenant["slug"], "after-backup")
    response = await api.delete(f"/v1/tenants/{tenant['id']}")
    assert response.status_code == 202, response.text
    assert (await finished(api, response.json()["operation_id"]))["state"] == "succeeded"
    return tenant, backup


async def revive(api: httpx.AsyncClient, tenant_id: str, backup_id: str, **body: str) -> dict:
    response = await api.post(f"/v1/tenants/{tenant_id}/restore", json={"backup_id": backup_id, **body})
    assert response.status_code == 202, response.text
    assert response.json()["tenant_id"] == tenant_id
    return await finished(api, response.json()["operation_id"])


async def refused(api: httpx.AsyncClient, tenant_id: str, backup_id: str, status: int, code: str) -> dict:
    response = await api.post(f"/v1/tenants/{tenant_id}/restore", json={"backup_id": backup_id})
    assert response.status_code == status and response.json()["code"] == code, response.text
    tenant = (await api.get(f"/v1/tenants/{tenant_id}")).json()
    assert tenant["status"] == "deleted"  # nothing changed, nothing queued
    ops = (await api.get(f"/v1/tenants/{tenant_id}/operations")).json()["items"]
    assert "revive_tenant" not in [op["kind"] for op in ops]
    return response.json()


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_a_deleted_tenant_comes_back_under_its_id_with_its_backup(api, tenant_app, stack: Stack, tier):
    tenant, backup = await deleted_with_backup(api, tenant_app, tier)
    gone = await tenant_app.get("/api/projects", headers={"Host": f"{tenant['slug']}.localhost"})
    assert gone.status_code in (404, 503), gone.text

    op = await revive(api, tenant["id"], backup["id"])

    assert op["state"] == "succeeded", op
    assert op["kind"] == "revive_tenant"
    assert [s["name"] for s in op["steps"]][:2] == ["plan_revival", "place_tenant"]
    back = await wait_for(api, tenant["id"], "active")
    assert (back["id"], back["slug"], back["tier"]) == (tenant["id"], tenant["slug"], tier)
    assert back["tenant_revision"] == backup["revision"] and back["server"] is not None
    assert await projects(tenant_app, tenant["slug"]) == ["kept-1", "kept-2"]
    await add_project(tenant_app, tenant["slug"], "after-revival")  # sequences continue after the copy
    assert await projects(tenant_app, tenant["slug"]) == ["after-revival", "kept-1", "kept-2"]
    await hardened(stack, back)
    await no_leftovers(stack, tenant["id"])

    events = (await api.get("/v1/events", params={"tenant": tenant["id"], "type": "tenant.restored"})).json()
    (event,) = [e for e in events["items"] if e["operation_id"] == op["id"]]
    assert event["data"]["revived"] is True and event["data"]["slug"] == tenant["slug"]
    audit = (await api.get("/v1/audit", params={"tenant": tenant["id"], "action": "tenant.revive"})).json()
    assert len(audit["items"]) == 1


async def test_a_deleted_tenant_can_come_back_on_another_tier(api, tenant_app, stack: Stack):
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    op = await revive(api, tenant["id"], backup["id"], tier="schema")
    assert op["state"] == "succeeded", op
    back = await wait_for(api, tenant["id"], "active")
    assert back["tier"] == "schema"
    assert await projects(tenant_app, tenant["slug"]) == ["kept-1", "kept-2"]
    await hardened(stack, back)
    # and it can be deleted again, like any tenant
    response = await api.delete(f"/v1/tenants/{tenant['id']}")
    assert (await finished(api, response.json()["operation_id"]))["state"] == "succeeded"


async def test_an_erased_tenant_cannot_be_restored(api, tenant_app):
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    erasure = await api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert erasure.status_code == 202, erasure.text
    await refused(api, tenant["id"], backup["id"], 409, "tenant_erased")  # asked for: refused already
    assert (await finished(api, erasure.json()["operation_id"]))["state"] == "succeeded"
    await refused(api, tenant["id"], backup["id"], 409, "tenant_erased")


async def test_a_backup_of_another_tenant_does_not_revive_a_deleted_one(api, tenant_app):
    tenant, _ = await deleted_with_backup(api, tenant_app, "dedicated")
    other = await create_tenant(api, "dedicated")
    foreign = await take_backup(api, other["id"])
    problem = await refused(api, tenant["id"], foreign["id"], 422, "backup_of_other_tenant")
    assert "from_backup" in problem["detail"]
    await refused(api, tenant["id"], "00000000-0000-4000-8000-000000000000", 422, "unknown_backup")


async def test_a_slug_taken_meanwhile_is_refused(api, tenant_app):
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    taken = await api.post("/v1/tenants", json={"slug": tenant["slug"], "name": "Newcomer", "tier": "dedicated"})
    assert taken.status_code == 202, taken.text
    problem = await refused(api, tenant["id"], backup["id"], 409, "slug_taken")
    assert "from_backup" in problem["detail"]
    await wait_for(api, taken.json()["tenant"]["id"], "active")  # the newcomer is untouched


async def test_destroyed_keys_and_an_owed_cancellation_are_refused(api, tenant_app, stack: Stack):
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:  # a subscription the billing round has not cancelled yet (Stripe was down, say)
        await catalog.execute("UPDATE tenants SET stripe_subscription_id = 'sub_owed' WHERE id = $1::uuid",
                              tenant["id"])
        await refused(api, tenant["id"], backup["id"], 409, "subscription_not_cancelled")
        await catalog.execute("UPDATE tenants SET stripe_subscription_id = NULL WHERE id = $1::uuid", tenant["id"])
    finally:
        await catalog.close()
    destroyed = await api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})
    assert destroyed.status_code == 200, destroyed.text
    await refused(api, tenant["id"], backup["id"], 409, "backup_keys_destroyed")


async def test_a_live_restore_keeps_its_tier(api, tenant_app):
    tenant = await create_tenant(api, "dedicated")
    backup = await take_backup(api, tenant["id"])
    response = await api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup["id"],
                                                                           "tier": "shared"})
    assert response.status_code == 422 and response.json()["code"] == "backup_not_restorable", response.text
    hostile = await api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup["id"],
                                                                          "tier": "'; DROP TABLE tenants; --"})
    assert hostile.status_code in (400, 422) and hostile.json()["code"] == "validation_failed", hostile.text


async def test_a_deleted_tenant_is_found_by_id_only(api, tenant_app):
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    by_slug = await api.post(f"/v1/tenants/{tenant['slug']}/restore", json={"backup_id": backup["id"]})
    assert by_slug.status_code == 404 and by_slug.json()["code"] == "tenant_not_found", by_slug.text


async def test_a_revival_given_up_is_failed_and_can_be_deleted_or_retried(api, tenant_app, stack: Stack):
    """The backup's object gone from the store after the API accepted: the load fails for good, the
    tenant is `failed` (like a failed create) with no scratch left; a DELETE makes it deleted again,
    and once the object is back a second revival fails again, is retried and succeeds."""
    tenant, backup = await deleted_with_backup(api, tenant_app, "dedicated")
    folder = Path(urlsplit(stack.settings.backup_store_url).path) / "tenants" / tenant["id"] / "backups"
    kept = {path: path.read_bytes() for path in folder.glob(f"{backup['id']}.tpbk*")}
    assert len(kept) == 2  # the object and its digest sidecar
    for path in kept:
        path.unlink()

    op = await revive(api, tenant["id"], backup["id"])

    assert op["state"] == "failed", op
    assert [s["state"] for s in op["steps"] if s["name"] == "load_clone_scratch"] == ["failed"]
    assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "failed"
    await no_leftovers(stack, tenant["id"])
    response = await api.delete(f"/v1/tenants/{tenant['id']}")
    assert response.status_code == 202, response.text
    assert (await finished(api, response.json()["operation_id"]))["state"] == "succeeded"
    assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "deleted"

    again = await revive(api, tenant["id"], backup["id"])
    assert again["state"] == "failed", again
    for path, data in kept.items():
        path.write_bytes(data)
    retried = await api.post(f"/v1/operations/{again['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (await finished(api, again["id"]))["state"] == "succeeded"
    await wait_for(api, tenant["id"], "active")
    assert await projects(tenant_app, tenant["slug"]) == ["kept-1", "kept-2"]
    await no_leftovers(stack, tenant["id"])
