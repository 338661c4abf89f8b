"""The vertical slice end to end: admin API → worker → routed tenant application."""

from __future__ import annotations

import asyncpg

from contracts import identifiers
from migrations import runner
from tests.conftest import Stack, create_active_tenant, wait_for


def host(tenant: dict) -> dict[str, str]:
    return {"Host": f"{tenant['slug']}.localhost"}


async def test_two_tenants_see_only_their_own_projects_and_delete_removes_everything(api, tenant_app, stack: Stack):
    a = await create_active_tenant(api)
    b = await create_active_tenant(api)
    assert a["tenant_revision"] == b["tenant_revision"] == runner.head(runner.DEMO_TREE)
    assert a["server"] == "local"

    for tenant, names in ((a, ["a1", "a2"]), (b, ["b1"])):
        for name in names:
            r = await tenant_app.post("/api/projects", json={"name": name}, headers=host(tenant))
            assert r.status_code == 201, r.text
            assert r.json()["name"] == name
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(a))).json()] == ["a1", "a2"]
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(b))).json()] == ["b1"]

    r = await api.delete(f"/v1/tenants/{a['id']}")
    assert r.status_code == 202, r.text
    assert r.json()["tenant"]["status"] == "deleting"
    op_id = r.json()["operation_id"]
    await wait_for(api, a["id"], "deleted")
    op = (await api.get(f"/v1/operations/{op_id}")).json()
    assert op["state"] == "succeeded" and op["kind"] == "delete_tenant"
    assert [s["state"] for s in op["steps"]] == ["succeeded"] * len(op["steps"])

    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                        identifiers.tenant_database(a["id"]))
        assert not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", identifiers.tenant_role(a["id"]))
        assert await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", identifiers.tenant_database(b["id"]))
    finally:
        await admin.close()

    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        actions = [r["action"] for r in await catalog.fetch(
            "SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id", a["id"])]
    finally:
        await catalog.close()
    assert actions == ["tenant.create", "tenant.delete"]

    r = await tenant_app.get("/api/projects", headers=host(a))
    assert r.status_code == 404 and r.json()["code"] == "tenant_not_found"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(b))).json()] == ["b1"]
