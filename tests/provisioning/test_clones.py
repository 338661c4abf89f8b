"""A new tenant made from a backup (`POST /v1/tenants` with `from_backup`), onto every tier from
every tier: it holds the data of dump time, is hardened and isolated like a fresh tenant, serves
through the router, and the source is untouched."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Stack, unique_slug, wait_for
from tests.provisioning.test_backup_restore import (
    add_project,
    create_tenant,
    finished,
    hardened,
    no_leftovers,
    projects,
    take_backup,
)


async def clone(api: httpx.AsyncClient, backup_id: str, tier: str) -> tuple[dict, dict]:
    response = await api.post("/v1/tenants", json={"slug": unique_slug("cl"), "name": "Clone", "tier": tier,
                                                   "from_backup": backup_id})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["tenant"]["status"] == "provisioning" and accepted["tenant"]["tier"] == tier
    return accepted["tenant"], await finished(api, accepted["operation_id"])


@pytest.mark.parametrize(("source_tier", "target_tier"), [
    ("shared", "dedicated"), ("dedicated", "shared"), ("schema", "dedicated"), ("dedicated", "schema"),
    ("dedicated", "dedicated"),
])
async def test_a_clone_holds_the_backup_on_any_tier(api, tenant_app, stack: Stack, source_tier, target_tier):
    source = await create_tenant(api, source_tier)
    await add_project(tenant_app, source["slug"], "at-dump-1")
    await add_project(tenant_app, source["slug"], "at-dump-2")
    backup = await take_backup(api, source["id"])
    await add_project(tenant_app, source["slug"], "after-dump")

    tenant, op = await clone(api, backup["id"], target_tier)

    assert op["state"] == "succeeded", op
    assert op["kind"] == "clone_tenant"
    assert "compare_clone" in [s["name"] for s in op["steps"]]
    made = await wait_for(api, tenant["id"], "active")
    assert made["tier"] == target_tier and made["tenant_revision"] == backup["revision"]
    assert await projects(tenant_app, made["slug"]) == ["at-dump-1", "at-dump-2"]
    await add_project(tenant_app, made["slug"], "clone-own")  # sequences continue after the copied rows
    assert await projects(tenant_app, made["slug"]) == ["at-dump-1", "at-dump-2", "clone-own"]
    # the source goes on as it was, and neither sees the other's rows
    assert await projects(tenant_app, source["slug"]) == ["after-dump", "at-dump-1", "at-dump-2"]
    await hardened(stack, made)
    await no_leftovers(stack, made["id"])


async def test_a_clone_from_an_unknown_or_unfinished_backup_is_refused(api):
    unknown = await api.post("/v1/tenants", json={"slug": unique_slug("cl"), "name": "Clone",
                                                  "from_backup": "00000000-0000-4000-8000-000000000000"})
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_backup", unknown.text
    malformed = await api.post("/v1/tenants", json={"slug": unique_slug("cl"), "name": "Clone",
                                                    "from_backup": "not-a-uuid"})
    assert malformed.status_code in (400, 422) and malformed.json()["code"] == "validation_failed", malformed.text

    source = await create_tenant(api, "dedicated")
    queued = (await api.post(f"/v1/tenants/{source['id']}/backups")).json()
    refused = await api.post("/v1/tenants", json={"slug": unique_slug("cl"), "name": "Clone",
                                                  "from_backup": queued["backup"]["id"]})
    if refused.status_code == 202:  # the worker finished the backup first: a clone of it is fine
        assert (await api.get(f"/v1/backups/{queued['backup']['id']}")).json()["state"] == "succeeded"
    else:
        assert refused.status_code == 422 and refused.json()["code"] == "backup_not_restorable", refused.text
    await finished(api, queued["operation_id"])


async def test_a_backup_of_another_tier_does_not_restore_in_place_but_clones(api, tenant_app):
    """In place, a restore keeps the tenant's tier: a tenant moved since its backup gets 422
    `backup_not_restorable` (which says how to get the data back), and a clone of it works."""
    tenant = await create_tenant(api, "dedicated")
    await add_project(tenant_app, tenant["slug"], "before-move")
    backup = await take_backup(api, tenant["id"])
    moved = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "schema"})
    assert (await finished(api, moved.json()["operation_id"]))["state"] == "succeeded"

    refused = await api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup["id"]})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "backup_not_restorable"
    assert "from_backup" in refused.json()["detail"] and "dedicated" in refused.json()["detail"]

    made, op = await clone(api, backup["id"], "schema")
    assert op["state"] == "succeeded", op
    assert await projects(tenant_app, made["slug"]) == ["before-move"]
