"""The router in front of the demo app: JWT before Host, gates by status, invalidation via Redis."""

from __future__ import annotations

import asyncio
import time

import jwt

from tests.conftest import Stack, create_active_tenant


def bearer(stack: Stack, tenant_id: str, **claims) -> dict[str, str]:
    body = {"tenant_id": tenant_id, "exp": int(time.time()) + 60, **claims}
    return {"Authorization": "Bearer " + jwt.encode(body, stack.settings.tenant_jwt_secret, algorithm="HS256")}


async def test_jwt_claim_selects_the_tenant_and_must_match_the_host(api, tenant_app, stack: Stack):
    a = await create_active_tenant(api)
    b = await create_active_tenant(api)
    r = await tenant_app.post("/api/projects", json={"name": "via-token"},
                              headers={"Host": "localhost", **bearer(stack, a["id"])})
    assert r.status_code == 201, r.text
    r = await tenant_app.get("/api/projects", headers={"Host": f"{a['slug']}.localhost", **bearer(stack, a["id"])})
    assert [p["name"] for p in r.json()] == ["via-token"]

    r = await tenant_app.get("/api/projects", headers={"Host": f"{b['slug']}.localhost", **bearer(stack, a["id"])})
    assert r.status_code == 403 and r.json()["code"] == "tenant_mismatch"

    expired = bearer(stack, a["id"], exp=int(time.time()) - 3600)
    r = await tenant_app.get("/api/projects", headers={"Host": f"{a['slug']}.localhost", **expired})
    assert r.status_code == 401 and r.json()["code"] == "invalid_token"


async def test_unknown_tenants_and_missing_tenants_get_404(tenant_app, stack: Stack):
    r = await tenant_app.get("/api/projects", headers={"Host": "nobody-here.localhost"})
    assert r.status_code == 404 and r.json()["code"] == "tenant_not_found"
    r = await tenant_app.get("/api/projects", headers={"Host": "localhost"})
    assert r.status_code == 404
    r = await tenant_app.get("/api/projects", headers={"Host": "localhost", **bearer(stack, "00000000-0000-0000-0000-000000000000")})
    assert r.status_code == 404


async def wait_status(tenant_app, headers, status: int, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        r = await tenant_app.get("/api/projects", headers=headers)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.05)


async def test_suspension_is_seen_at_once_and_resume_restores_access(api, tenant_app):
    a = await create_active_tenant(api)
    headers = {"Host": f"{a['slug']}.localhost"}
    assert (await tenant_app.get("/api/projects", headers=headers)).status_code == 200  # now cached

    assert (await api.patch(f"/v1/tenants/{a['id']}", json={"status": "suspended"})).status_code == 200
    started = time.monotonic()
    r = await wait_status(tenant_app, headers, 403)
    assert r.status_code == 403 and r.json()["code"] == "tenant_suspended"
    assert time.monotonic() - started < 1.0, "the invalidation should beat the 30 s cache TTL"

    assert (await api.patch(f"/v1/tenants/{a['id']}", json={"status": "active"})).status_code == 200
    assert (await wait_status(tenant_app, headers, 200)).status_code == 200


async def test_a_failed_handler_rolls_back(api, tenant_app):
    a = await create_active_tenant(api)
    headers = {"Host": f"{a['slug']}.localhost"}
    r = await tenant_app.post("/api/projects", json={"name": "x" * 201}, headers=headers)
    assert r.status_code == 422
    assert (await tenant_app.get("/api/projects", headers=headers)).json() == []
