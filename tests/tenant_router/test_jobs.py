"""Running as a tenant outside a request: `tenant_context()` by slug or id, with the status gates
(suspended refused unless asked), one transaction per block, and `for_each_tenant()` with its
per-tenant outcomes and its bound per server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from contracts.placement import Placement
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant
from tenant_router.errors import TenantNotFound, TenantSuspended
from tenant_router.jobs import for_each_tenant, started_router, tenant_context
from tenant_router.runtime import TenantRouter
from tests.conftest import Stack, create_active_tenant


def router_config(stack: Stack) -> RouterConfig:
    return RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                        redis_url=stack.settings.redis_url, apex="localhost")


@pytest.fixture(scope="module")
async def router(stack: Stack) -> AsyncIterator[TenantRouter]:
    async with started_router(router_config(stack)) as r:
        yield r


async def names(router: TenantRouter, tenant: str) -> list[str]:
    async with tenant_context(tenant, router=router) as db:
        return [r["name"] for r in await db.fetch("SELECT name FROM projects ORDER BY id")]


async def test_a_job_writes_as_its_tenant_by_slug_or_id(api, router, tenant_app):
    a, b = await create_active_tenant(api), await create_active_tenant(api)
    async with tenant_context(a["slug"], router=router) as db:
        assert current_tenant().slug == a["slug"]
        await db.execute("INSERT INTO projects (name) VALUES ('from a job')")
    assert await names(router, a["id"]) == ["from a job"]
    assert await names(router, b["slug"]) == []
    # a request sees what the job committed
    r = await tenant_app.get("/api/projects", headers={"Host": f"{a['slug']}.localhost"})
    assert [p["name"] for p in r.json()] == ["from a job"]


async def test_a_failing_block_rolls_back(api, router):
    tenant = await create_active_tenant(api)
    with pytest.raises(ZeroDivisionError):
        async with tenant_context(tenant["slug"], router=router) as db:
            await db.execute("INSERT INTO projects (name) VALUES ('doomed')")
            1 / 0  # noqa: B018
    assert await names(router, tenant["slug"]) == []


async def test_suspended_tenants_refuse_unless_asked(api, router):
    tenant = await create_active_tenant(api)
    assert (await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})).status_code == 200
    with pytest.raises(TenantSuspended):
        async with tenant_context(tenant["slug"], router=router):
            pass
    async with tenant_context(tenant["slug"], router=router, include_suspended=True) as db:
        assert await db.fetchval("SELECT count(*) FROM projects") == 0
    for unknown in ("no-such-tenant", str(uuid.uuid4()), "x' OR '1'='1"):
        with pytest.raises(TenantNotFound):
            async with tenant_context(unknown, router=router):
                pass


async def test_a_script_without_a_router_starts_its_own(api, stack):
    tenant = await create_active_tenant(api)
    async with tenant_context(tenant["slug"], config=router_config(stack)) as db:
        assert await db.fetchval("SELECT count(*) FROM projects") == 0


async def test_for_each_tenant_reports_every_tenant_and_bounds_each_server(api, router):
    tenants = [await create_active_tenant(api) for _ in range(3)]
    running, most = 0, 0

    async def job(db, tenant: Placement) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)
            await db.execute("INSERT INTO projects (name) VALUES ($1)", f"each {tenant.slug}")
            if tenant.slug == tenants[1]["slug"]:
                raise ValueError("secret data must not reach the report")
            return await db.fetchval("SELECT count(*) FROM projects")
        finally:
            running -= 1

    report = await for_each_tenant(job, tenants=[t["slug"] for t in tenants] + ["nobody-at-all"],
                                   per_server=1, router=router)
    by_slug = {o.slug: o for o in report}
    assert most == 1  # all three live on the one test server
    assert by_slug[tenants[0]["slug"]].ok and by_slug[tenants[0]["slug"]].result == 1
    assert by_slug[tenants[2]["slug"]].ok
    failed = by_slug[tenants[1]["slug"]]
    assert not failed.ok and failed.error == "ValueError"  # the type, not the message
    assert by_slug["nobody-at-all"].error == "tenant_not_found"
    assert await names(router, tenants[1]["slug"]) == []  # its transaction rolled back
    assert await names(router, tenants[2]["slug"]) == [f"each {tenants[2]['slug']}"]


async def test_for_each_tenant_runs_for_every_active_tenant_only(api, router):
    active, suspended = await create_active_tenant(api), await create_active_tenant(api)
    await api.patch(f"/v1/tenants/{suspended['id']}", json={"status": "suspended"})

    async def job(db, tenant: Placement) -> str:
        return tenant.slug

    slugs = {o.slug for o in await for_each_tenant(job, per_server=8, router=router) if o.ok}
    assert active["slug"] in slugs and suspended["slug"] not in slugs
    slugs = {o.slug for o in await for_each_tenant(job, per_server=8, router=router, include_suspended=True) if o.ok}
    assert suspended["slug"] in slugs
