"""Admin keys (issue #14): created with scopes and an expiry (the token shown once), listed without
tokens, revoked at once; a key without the scope a route needs gets 403 insufficient_scope, and
every write is audited as the key's owner."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest

from control_plane import scopes
from control_plane.api.app import admin_guard, create_app
from control_plane.scopes import SCOPES
from tests.conftest import Stack, unique_slug


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_key(api, *key_scopes: str, **extra) -> tuple[str, str]:
    name = unique_slug("k")
    r = await api.post("/v1/admin-keys", json={"name": name, "scopes": list(key_scopes), **extra})
    assert r.status_code == 201, r.text
    assert r.json()["key"]["scopes"] == sorted(set(key_scopes)) and r.json()["token"].startswith("tpa_")
    return name, r.json()["token"]


async def test_a_key_is_shown_once_listed_without_its_token_and_audited(api, stack: Stack):
    name, token = await make_key(api, "tenants:write")
    listed = (await api.get("/v1/admin-keys")).json()["items"]
    mine = next(k for k in listed if k["name"] == name)
    assert mine["created_by"] == "api-key:bootstrap" and mine["revoked_at"] is None
    assert token not in str(listed) and "sha256" not in str(listed)
    assert next(k for k in listed if k["name"] == "bootstrap")["scopes"] == ["admin"]
    created = (await api.get("/v1/audit", params={"action": "admin_key.create", "limit": 500})).json()["items"]
    assert any(e["details"]["name"] == name and e["actor"] == "api-key:bootstrap" for e in created)
    assert token not in str(created)

    # a write made with the key is audited as the key's owner
    r = await api.post("/v1/users", json={"email": f"{name}@example.com"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    entries = (await api.get("/v1/audit", params={"actor": f"api-key:{name}"})).json()["items"]
    assert [e["action"] for e in entries] == ["user.create"]
    assert (await api.post("/v1/admin-keys", json={"name": name, "scopes": ["admin"]})).json()["code"] == "admin_key_name_taken"


async def test_a_read_only_key_reads_and_is_refused_writes(api):
    _, token = await make_key(api, "tenants:read")
    assert (await api.get("/v1/tenants", headers=bearer(token))).status_code == 200
    assert (await api.get("/v1/database-servers", headers=bearer(token))).status_code == 200
    for method, path, body in [("POST", "/v1/tenants", {"slug": unique_slug(), "name": "No"}),
                               ("POST", "/v1/users", {"email": "no@example.com"}),
                               ("POST", "/v1/database-servers/local/cordon", None),
                               ("GET", "/v1/admin-keys", None),
                               ("POST", "/v1/admin-keys", {"name": "escalate", "scopes": ["admin"]})]:
        r = await api.request(method, path, json=body, headers=bearer(token))
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "insufficient_scope" and "admin" in r.json()["needed"]
    assert (await api.get("/v1/tenants", params={"slug": "x"})).status_code == 200
    keys = (await api.get("/v1/admin-keys")).json()["items"]
    assert "escalate" not in {k["name"] for k in keys}
    servers = (await api.get("/v1/database-servers")).json()["items"]
    assert next(s for s in servers if s["name"] == "local")["status"] == "active"


def _admin_routes(stack: Stack):
    app = create_app(stack.settings)
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if admin_guard in handler.resolve_guards():
                for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                    yield re.sub(r"\{[^}:]+(:[a-z]+)?\}", "no-such-thing", route.path), method, handler


def test_every_admin_route_names_its_area(stack: Stack):
    seen = 0
    for path, _, handler in _admin_routes(stack):
        assert handler.opt.get("area") in ("tenants", "servers", "billing", "admin"), path
        seen += 1
    assert seen >= 40


async def test_a_key_with_each_scope_against_each_route(api, stack: Stack):
    """For every admin route and method, a key with one scope is refused exactly where the scope
    does not reach (the guard answers before the handler runs, so no write happens)."""
    tokens = {scope: (await make_key(api, scope))[1] for scope in SCOPES}
    refused = allowed = 0
    for path, method, handler in _admin_routes(stack):
        for scope, token in tokens.items():
            if scopes.allowed(frozenset({scope}), handler.opt.get("area"), method):
                allowed += 1
                continue
            r = await api.request(method, path, headers={**bearer(token), "Content-Type": "application/json"},
                                  content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
            assert r.status_code == 403 and r.json()["code"] == "insufficient_scope", (scope, method, path, r.text)
            refused += 1
    assert refused > 50 and allowed > 50
    # and where it reaches, the request gets past the guard
    assert (await api.get("/v1/billing/events", headers=bearer(tokens["billing"]))).status_code != 403
    assert (await api.get("/v1/tenants", headers=bearer(tokens["tenants:write"]))).status_code == 200
    assert (await api.get("/v1/migrations", headers=bearer(tokens["servers"]))).status_code == 200
    assert (await api.get("/v1/admin-keys", headers=bearer(tokens["admin"]))).status_code == 200


async def test_revoked_and_expired_keys_are_refused(api):
    name, token = await make_key(api, "admin")
    assert (await api.get("/v1/overview", headers=bearer(token))).status_code == 200
    r = await api.post(f"/v1/admin-keys/{name}/revoke")
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    assert (await api.get("/v1/overview", headers=bearer(token))).json()["code"] == "unauthorized"
    again = await api.post(f"/v1/admin-keys/{name}/revoke")
    assert again.json()["revoked_at"] == r.json()["revoked_at"]
    revokes = (await api.get("/v1/audit", params={"action": "admin_key.revoke", "limit": 500})).json()["items"]
    assert sum(e["details"]["name"] == name for e in revokes) == 1
    assert (await api.post("/v1/admin-keys/no-such-key/revoke")).json()["code"] == "admin_key_not_found"

    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
    _, short = await make_key(api, "tenants:read", expires_at=soon)
    assert (await api.get("/v1/overview", headers=bearer(short))).status_code == 200
    await asyncio.sleep(2)
    assert (await api.get("/v1/overview", headers=bearer(short))).status_code == 401


@pytest.mark.parametrize("body", [
    {"name": "ok-name", "scopes": []},
    {"name": "ok-name", "scopes": ["root"]},
    {"name": "Bad Name", "scopes": ["admin"]},
    {"name": "x" * 64, "scopes": ["admin"]},
    {"name": "ok-name\n", "scopes": ["admin"]},
    {"name": "ok-name", "scopes": ["admin"], "token": "mine"},
    {"name": "ok-name", "scopes": ["admin"], "expires_at": "2000-01-01T00:00:00Z"},
    {"name": "ok-name", "scopes": ["admin"], "expires_at": "2999-01-01T00:00:00"},
    {"name": "ok-name", "scopes": ["admin"], "expires_at": "tomorrow"},
    {"scopes": ["admin"]},
])
async def test_hostile_key_requests(api, body):
    r = await api.post("/v1/admin-keys", json=body)
    assert r.status_code == 422 and r.json()["code"] == "validation_failed", r.text
