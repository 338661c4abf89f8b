"""Schema and shared tiers end to end: provisioning, routing, what the server enforces, deletion."""

from __future__ import annotations

import time

import asyncpg
import pytest

from contracts import guard, identifiers
from contracts.credentials import role_password
from contracts.identifiers import SCHEMA_GATEWAY_ROLE
from tests.conftest import Stack, unique_slug, wait_for


async def create(api, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug(tier[:2]), "name": tier, "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


def host(t: dict) -> dict[str, str]:
    return {"Host": f"{t['slug']}.localhost"}


@pytest.mark.parametrize("tier", ["schema", "shared"])
async def test_tenants_on_a_shared_database_see_only_their_own_rows(api, tenant_app, stack: Stack, tier: str):
    a, b = await create(api, tier), await create(api, tier)
    assert a["tier"] == tier and a["tenant_revision"]
    for tenant, names in ((a, ["a1", "a2"]), (b, ["b1"])):
        for name in names:
            r = await tenant_app.post("/api/projects", json={"name": name}, headers=host(tenant))
            assert r.status_code == 201, r.text
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(a))).json()] == ["a1", "a2"]
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(b))).json()] == ["b1"]

    assert (await api.delete(f"/v1/tenants/{a['id']}")).status_code == 202
    await wait_for(api, a["id"], "deleted")
    assert (await tenant_app.get("/api/projects", headers=host(a))).status_code == 404
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(b))).json()] == ["b1"]

    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        if tier == "schema":
            assert not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", identifiers.tenant_role(a["id"]))
        db = identifiers.SCHEMAS_DATABASE if tier == "schema" else identifiers.SHARED_DATABASE
    finally:
        await admin.close()
    inside = await asyncpg.connect(stack.pg.dsn(db))
    try:
        if tier == "schema":
            assert not await inside.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                             identifiers.tenant_schema(a["id"]))
        else:
            assert await inside.fetchval("SELECT count(*) FROM projects WHERE tenant_id = $1::uuid", a["id"]) == 0
            assert await inside.fetchval("SELECT count(*) FROM projects WHERE tenant_id = $1::uuid", b["id"]) == 1
    finally:
        await inside.close()


async def test_what_the_server_enforces_on_the_schema_tier(api, stack: Stack):
    a, b = await create(api, "schema"), await create(api, "schema")
    gateway = await asyncpg.connect(host="127.0.0.1", port=stack.pg.port, database=identifiers.SCHEMAS_DATABASE,
                                    user=SCHEMA_GATEWAY_ROLE,
                                    password=role_password(stack.settings.secret_key, SCHEMA_GATEWAY_ROLE))
    try:
        schema_a, schema_b = identifiers.tenant_schema(a["id"]), identifiers.tenant_schema(b["id"])
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # NOINHERIT: nothing without SET ROLE
            await gateway.fetch(f'SELECT * FROM "{schema_a}".projects')
        async with gateway.transaction():
            await gateway.execute(f'SET LOCAL ROLE "{identifiers.tenant_role(a["id"])}"')
            await gateway.fetch(f'SELECT * FROM "{schema_a}".projects')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # USAGE on its own schema only
                await gateway.fetch(f'SELECT * FROM "{schema_b}".projects')
    finally:
        await gateway.close()
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
                                        identifiers.tenant_role(a["id"]))
    finally:
        await admin.close()


async def test_what_the_server_enforces_on_the_shared_tier(api, tenant_app, stack: Stack):
    a = await create(api, "shared")
    await tenant_app.post("/api/projects", json={"name": "secret"}, headers=host(a))
    admin = await asyncpg.connect(stack.pg.dsn(identifiers.SHARED_DATABASE))
    try:
        rls = await admin.fetchrow("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'projects'")
        assert rls["relrowsecurity"] and rls["relforcerowsecurity"]
        policy = await admin.fetchval("SELECT qual FROM pg_policies WHERE tablename = 'projects'")
        assert policy == "(tenant_id = ( SELECT tp_guard.bound_tenant() AS bound_tenant))"  # the verified binding
        app_role = await admin.fetchrow("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = $1",
                                        identifiers.SHARED_APP_ROLE)
        assert not app_role["rolbypassrls"] and not app_role["rolsuper"]
        owned = await admin.fetchval("SELECT count(*) FROM pg_tables WHERE tableowner = $1", identifiers.SHARED_APP_ROLE)
        assert owned == 0
        pk = await admin.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'projects'::regclass AND contype = 'p'")
        assert pk.startswith("PRIMARY KEY (tenant_id")
    finally:
        await admin.close()
    app = await asyncpg.connect(host="127.0.0.1", port=stack.pg.port, database=identifiers.SHARED_DATABASE,
                                user=identifiers.SHARED_APP_ROLE,
                                password=role_password(stack.settings.secret_key, identifiers.SHARED_APP_ROLE))
    try:
        assert await app.fetchval("SELECT count(*) FROM projects") == 0  # no tenant bound: nothing visible
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK: no rows for nobody
            await app.execute("INSERT INTO projects (tenant_id, name) VALUES (gen_random_uuid(), 'x')")
        async with app.transaction():  # the setting alone binds nothing: anyone's SQL can set it
            await app.execute("SELECT set_config('app.tenant_id', $1, true)", a["id"])
            assert await app.fetchval("SELECT count(*) FROM projects") == 0
        key = guard.binding_key(stack.settings.secret_key)
        async with app.transaction():  # a ticket for this backend, as the router makes it
            await app.execute(guard.bind_statement(key, a["id"], app.get_server_pid(), int(time.time() * 1000)))
            assert await app.fetchval("SELECT count(*) FROM projects") == 1
        assert await app.fetchval("SELECT count(*) FROM projects") == 0  # the binding ended with the transaction
    finally:
        await app.close()


@pytest.mark.parametrize("tier", ["schema", "shared"])
async def test_concurrent_creates_on_a_shared_database_need_no_retry(api, stack: Stack, tier: str):
    """Creates grant on the same shared objects; PostgreSQL refuses concurrent GRANTs on one object
    ("tuple concurrently updated"), so the steps take turns instead of failing and retrying."""
    import asyncio

    tenants = await asyncio.gather(*(create(api, tier) for _ in range(8)))
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        rows = await catalog.fetch(
            "SELECT s.name, s.attempts, s.error FROM operation_steps s JOIN operations o ON o.id = s.operation_id "
            "WHERE o.tenant_id = ANY($1::uuid[]) AND s.attempts <> 1", [t["id"] for t in tenants])
    finally:
        await catalog.close()
    assert [dict(r) for r in rows] == []
