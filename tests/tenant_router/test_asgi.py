"""The plain ASGI middleware and `tenant_transaction()` under Starlette and FastAPI, in process:
the same resolution, gates and problem answers as the Litestar plugin, one transaction per block
(committed, or rolled back with the error), and each tenant seeing only its own rows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager  # drives the ASGI lifespan, as a server would

from examples import fastapi_app, starlette_app
from tenant_router.config import RouterConfig
from tests.conftest import Stack, create_active_tenant

FRAMEWORKS = {"starlette": starlette_app.create_app, "fastapi": fastapi_app.create_app}


def host(tenant: dict) -> dict[str, str]:
    return {"Host": f"{tenant['slug']}.localhost"}


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
async def client(request, stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          redis_url=stack.settings.redis_url, apex="localhost",
                          jwt_secret=stack.settings.tenant_jwt_secret)
    app = FRAMEWORKS[request.param](config)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


@pytest.fixture(scope="module")
async def tenants(api) -> tuple[dict, dict]:
    return await create_active_tenant(api), await create_active_tenant(api)


async def test_each_tenant_sees_only_its_own_rows(client, tenants):
    a, b = tenants
    name = f"only-{uuid.uuid4().hex[:8]}"
    r = await client.post("/api/projects", json={"name": name}, headers=host(a))
    assert r.status_code == 201, r.text
    assert name in [p["name"] for p in (await client.get("/api/projects", headers=host(a))).json()]
    assert name not in [p["name"] for p in (await client.get("/api/projects", headers=host(b))).json()]


async def test_a_failing_handler_rolls_its_transaction_back(client, tenants):
    a, _ = tenants
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    r = await client.post("/api/projects", json={"name": name, "fail": True}, headers=host(a))
    assert r.status_code == 500
    assert name not in [p["name"] for p in (await client.get("/api/projects", headers=host(a))).json()]


async def test_request_ids_are_echoed_on_answers_and_refusals(client, tenants):
    a, _ = tenants
    for headers in (host(a), {"Host": "nobody-here.localhost"}):
        r = await client.get("/api/projects", headers={**headers, "X-Request-ID": "req-abc-123"})
        assert r.headers["x-request-id"] == "req-abc-123"
    assert (await client.get("/api/projects", headers=host(a))).headers["x-request-id"]  # one is made up


async def test_unknown_tenants_get_the_routers_problem(client):
    for headers in ({"Host": "nobody-here.localhost"}, {"Host": "localhost"}):
        r = await client.get("/api/projects", headers=headers)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "tenant_not_found" and r.json()["type"] == "urn:tenantplane:problem:tenant_not_found"
    r = await client.get("/api/projects", headers={"Host": "a.localhost", "Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_a_router_error_from_a_handler_is_a_problem(client, tenants):
    a, _ = tenants
    r = await client.get("/api/projects/987654321", headers=host(a))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "project_not_found"


async def test_rate_limits_answer_429_with_the_plugins_headers(client, api):
    name = f"plan_{uuid.uuid4().hex[:10]}"
    await api.put(f"/v1/plans/{name}", json={"features": [], "rate_limit_per_minute": 3})
    tenant = await create_active_tenant(api)
    await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": name})
    deadline = time.monotonic() + 5
    while "RateLimit-Limit" not in (r := await client.get("/api/projects", headers=host(tenant))).headers:
        assert time.monotonic() < deadline, "the plan did not reach the router"
        await asyncio.sleep(0.02)
    for remaining in (2, 1, 0):
        if remaining < 2:
            r = await client.get("/api/projects", headers=host(tenant))
        assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == str(remaining)
    r = await client.get("/api/projects", headers=host(tenant))
    assert r.status_code == 429 and r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["RateLimit-Limit"] == "3"


async def test_status_billing_and_features_gate_as_in_the_plugin(client, api):
    tenant = await create_active_tenant(api)
    r = await client.get("/api/analytics/export", headers=host(tenant))
    assert r.status_code == 403 and r.json()["code"] == "feature_not_enabled" and r.json()["upgrade"] is True
    await api.put(f"/v1/tenants/{tenant['id']}/features/analytics_export", json={"enabled": True})
    r = await _until(client, "/api/analytics/export", tenant, 200)
    assert r.json() == {"tenant": tenant["slug"], "projects": 0}

    await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "past_due"})
    r = await _until(client, "/api/projects", tenant, 402)
    assert r.json()["code"] == "payment_required"
    await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "ok"})
    await _until(client, "/api/projects", tenant, 200)

    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})
    r = await _until(client, "/api/projects", tenant, 403)
    assert r.json()["code"] == "tenant_suspended"


async def _until(client: httpx.AsyncClient, path: str, tenant: dict, status: int) -> httpx.Response:
    """The Redis invalidation reaches the router within a second or so."""
    deadline = time.monotonic() + 5
    while True:
        r = await client.get(path, headers=host(tenant))
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r
        await asyncio.sleep(0.05)
