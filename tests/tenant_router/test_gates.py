"""The router's gates in front of the demo app: billing (402), plan features (403 with an upgrade
hint), member roles (403) and per-tenant rate limits (429). Admin changes reach the routers through
the Redis invalidation, so each is seen within a second rather than after the cache TTL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid

import httpx
import jwt
import pytest

from contracts.placement import Placement, TenantStatus, Tier
from tenant_router.errors import RateLimited
from tenant_router.gates import RATE_LIMIT_STATE, admit
from tenant_router.ratelimit import TenantRateLimiter
from tests.conftest import Stack, create_active_tenant

SEEN_WITHIN = 1.0  # seconds: the invalidation, not the 30 s cache TTL


def host(tenant: dict) -> dict[str, str]:
    return {"Host": f"{tenant['slug']}.localhost"}


def token(stack: Stack, tenant: dict, sub: str | None = None) -> dict[str, str]:
    claims = {"tenant_id": tenant["id"], "exp": int(time.time()) + 60}
    if sub is not None:
        claims["sub"] = sub
    return {"Authorization": "Bearer " + jwt.encode(claims, stack.settings.tenant_jwt_secret, algorithm="HS256")}


async def until(request, status: int, timeout: float = SEEN_WITHIN + 2) -> tuple[httpx.Response, float]:
    """Repeat `request()` until it answers `status`; the answer and how long that took."""
    started = time.monotonic()
    while True:
        response = await request()
        elapsed = time.monotonic() - started
        if response.status_code == status or elapsed > timeout:
            return response, elapsed
        await asyncio.sleep(0.02)


def plan_name() -> str:
    return f"plan_{uuid.uuid4().hex[:10]}"


async def test_past_due_tenants_get_402_until_billing_is_ok(api, tenant_app):
    tenant = await create_active_tenant(api)
    projects = lambda: tenant_app.get("/api/projects", headers=host(tenant))  # noqa: E731
    assert (await projects()).status_code == 200  # the placement is cached now

    assert (await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "past_due"})).status_code == 200
    response, elapsed = await until(projects, 402)
    assert response.status_code == 402 and elapsed < SEEN_WITHIN
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payment_required" and response.json()["status"] == 402

    await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "ok"})
    response, elapsed = await until(projects, 200)
    assert response.status_code == 200 and elapsed < SEEN_WITHIN


async def test_a_feature_outside_the_plan_answers_403_with_an_upgrade_hint(api, tenant_app):
    tenant = await create_active_tenant(api)
    export = lambda: tenant_app.get("/api/analytics/export", headers=host(tenant))  # noqa: E731
    response = await export()
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "feature_not_enabled" and body["upgrade"] is True
    assert body["feature"] == "analytics_export" and body["type"] == "urn:tenantplane:problem:feature_not_enabled"

    # an override grants it ...
    await api.put(f"/v1/tenants/{tenant['id']}/features/analytics_export", json={"enabled": True})
    response, elapsed = await until(export, 200)
    assert response.status_code == 200 and elapsed < SEEN_WITHIN
    assert response.json() == {"tenant": tenant["slug"], "projects": 0}
    await api.delete(f"/v1/tenants/{tenant['id']}/features/analytics_export")
    response, elapsed = await until(export, 403)
    assert response.status_code == 403 and elapsed < SEEN_WITHIN

    # ... and so does moving to a plan that has it, or changing the plan itself
    name = plan_name()
    await api.put(f"/v1/plans/{name}", json={"features": ["analytics_export"]})
    await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": name})
    response, elapsed = await until(export, 200)
    assert response.status_code == 200 and elapsed < SEEN_WITHIN
    await api.put(f"/v1/plans/{name}", json={"features": ["sso"]})
    response, elapsed = await until(export, 403)
    assert response.status_code == 403 and elapsed < SEEN_WITHIN


async def test_deleting_a_project_needs_an_owner_or_admin(api, tenant_app, stack: Stack):
    tenant, other = await create_active_tenant(api), await create_active_tenant(api)
    users = {}
    for label in ("owner", "member", "elsewhere"):
        r = await api.post("/v1/users", json={"email": f"{label}.{uuid.uuid4().hex[:8]}@example.com"})
        users[label] = r.json()["id"]
    await api.put(f"/v1/tenants/{tenant['id']}/memberships/{users['owner']}", json={"role": "owner"})
    await api.put(f"/v1/tenants/{tenant['id']}/memberships/{users['member']}", json={"role": "member"})
    await api.put(f"/v1/tenants/{other['id']}/memberships/{users['elsewhere']}", json={"role": "owner"})

    async def new_project() -> int:
        r = await tenant_app.post("/api/projects", json={"name": "doomed"}, headers=host(tenant))
        assert r.status_code == 201, r.text
        return r.json()["id"]

    project = await new_project()
    refused = [
        host(tenant),  # no token, no user
        token(stack, tenant),  # a token without `sub`
        token(stack, tenant, sub="not-a-uuid"),
        token(stack, tenant, sub=str(uuid.uuid4())),  # nobody
        token(stack, tenant, sub=users["member"]),  # a member, not an owner or admin
        token(stack, tenant, sub=users["elsewhere"]),  # an owner of another tenant
    ]
    for headers in refused:
        r = await tenant_app.delete(f"/api/projects/{project}", headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.json()["code"] == "role_required" and r.json()["roles"] == ["owner", "admin"]

    r = await tenant_app.delete(f"/api/projects/{project}", headers=token(stack, tenant, sub=users["owner"]))
    assert r.status_code == 204, r.text
    r = await tenant_app.delete(f"/api/projects/{project}", headers=token(stack, tenant, sub=users["owner"]))
    assert r.status_code == 404 and r.json()["code"] == "project_not_found"
    for bad in (str(10**30), "-1", "0", "1.5", "abc"):
        r = await tenant_app.delete(f"/api/projects/{bad}", headers=token(stack, tenant, sub=users["owner"]))
        assert 400 <= r.status_code < 500 and r.json()["code"], (bad, r.text)
    for sub in (123, ["a"], "x" * 10_000):  # not a user id: refused, never a 5xx
        r = await tenant_app.delete(f"/api/projects/{project}", headers=token(stack, tenant, sub=sub))
        assert r.status_code in (401, 403), (sub, r.text)

    # promoting the member is seen at once (the cached role is dropped with the placement) ...
    project = await new_project()
    as_member = lambda: tenant_app.delete(f"/api/projects/{project}",  # noqa: E731
                                          headers=token(stack, tenant, sub=users["member"]))
    await api.put(f"/v1/tenants/{tenant['id']}/memberships/{users['member']}", json={"role": "admin"})
    response, elapsed = await until(as_member, 204)
    assert response.status_code == 204 and elapsed < SEEN_WITHIN

    # ... and so is removing them
    project = await new_project()
    await api.delete(f"/v1/tenants/{tenant['id']}/memberships/{users['member']}")
    response, elapsed = await until(as_member, 403)
    assert response.status_code == 403 and elapsed < SEEN_WITHIN


async def test_rate_limits_are_per_tenant_and_by_plan(api, tenant_app):
    name = plan_name()
    await api.put(f"/v1/plans/{name}", json={"features": [], "rate_limit_per_minute": 5})
    busy, quiet, unlimited = [await create_active_tenant(api) for _ in range(3)]
    for tenant in (busy, quiet):
        await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": name})
    # until the router has the plan no request is counted; the first one it counts says 4 remain
    deadline = time.monotonic() + SEEN_WITHIN
    while "RateLimit-Limit" not in (r := await tenant_app.get("/api/projects", headers=host(busy))).headers:
        assert time.monotonic() < deadline, "the plan did not reach the router"
        await asyncio.sleep(0.01)
    for expected_remaining in (4, 3, 2, 1, 0):
        if expected_remaining < 4:
            r = await tenant_app.get("/api/projects", headers=host(busy))
        assert r.status_code == 200, r.text
        assert r.headers["RateLimit-Limit"] == "5"
        assert r.headers["RateLimit-Remaining"] == str(expected_remaining)
        assert 0 < int(r.headers["RateLimit-Reset"]) <= 60

    r = await tenant_app.get("/api/projects", headers=host(busy))
    assert r.status_code == 429
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["RateLimit-Limit"] == "5" and r.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(r.headers["RateLimit-Reset"]) <= 60

    r = await tenant_app.get("/api/projects", headers=host(quiet))  # same plan, its own count
    assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "4"
    for _ in range(8):  # no plan: no limit, no headers
        r = await tenant_app.get("/api/projects", headers=host(unlimited))
        assert r.status_code == 200 and "RateLimit-Limit" not in r.headers


# --- Redis down: the limiter fails open instead of blocking every tenant ---


def placement(per_minute: int | None) -> Placement:
    return Placement(tenant_id=uuid.uuid4(), slug="acme", status=TenantStatus.active, tier=Tier.dedicated,
                     server_id=None, host=None, port=None, database=None, role=None, schema=None, version=1,
                     rate_limit_per_minute=per_minute)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def silent_server():
    """Accepts connections and never answers: a hung Redis."""
    writers = []

    async def hold(_, writer):
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_with_redis_refusing_connections_requests_are_admitted():
    limiter = TenantRateLimiter(f"redis://127.0.0.1:{closed_port()}/0")
    state: dict = {}
    started = time.monotonic()
    for _ in range(5):
        await admit(limiter, None, placement(1), state)  # a limit of 1, yet nothing is refused
    assert RATE_LIMIT_STATE not in state
    assert time.monotonic() - started < 2.0
    assert limiter._open_until > time.monotonic()  # cooling down, not retrying


async def test_with_redis_hanging_a_request_waits_at_most_the_timeout():
    async with silent_server() as port:
        limiter = TenantRateLimiter(f"redis://127.0.0.1:{port}/0", timeout=0.2, cooldown=30)
        started = time.monotonic()
        assert await limiter.hit(uuid.uuid4(), 1) is None
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert await limiter.hit(uuid.uuid4(), 1) is None  # open: not even tried
        assert time.monotonic() - started < 0.05


async def test_without_redis_the_limit_is_counted_in_process():
    limiter = TenantRateLimiter(None)
    tenant = placement(2)
    state: dict = {}
    await admit(limiter, None, tenant, state)
    assert state[RATE_LIMIT_STATE]["RateLimit-Remaining"] == "1"
    await admit(limiter, None, tenant, state)
    with pytest.raises(RateLimited) as refused:
        await admit(limiter, None, tenant, {})
    assert refused.value.headers["RateLimit-Remaining"] == "0" and int(refused.value.headers["Retry-After"]) >= 1
