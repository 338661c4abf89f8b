"""The admin API behind the router's gates: plans, a tenant's plan and billing status, feature
overrides, users and memberships. Every write leaves an audit row; hostile input gets a 4xx."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
import pytest

from tests.conftest import Stack, unique_slug

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_KEYS <= body.keys() and body["code"] == code, body
    assert body["type"] == f"urn:tenantplane:problem:{code}"
    return body


def plan_name(prefix: str = "p") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def new_tenant(api: httpx.AsyncClient) -> dict:
    """A tenant row is all these endpoints need; it need not be provisioned yet."""
    response = await api.post("/v1/tenants", json={"slug": unique_slug("g"), "name": "Gates"})
    assert response.status_code == 202, response.text
    return response.json()["tenant"]


async def audit_rows(stack: Stack, target_id: str) -> list[tuple[str, dict]]:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
        rows = await conn.fetch("SELECT action, details FROM audit_log WHERE target_id = $1 ORDER BY id", target_id)
    finally:
        await conn.close()
    return [(r["action"], r["details"]) for r in rows]


async def test_plans_are_created_replaced_listed_and_deleted(api, stack: Stack):
    name = plan_name()
    r = await api.put(f"/v1/plans/{name}", json={"description": "Pro", "features": ["sso", "analytics_export", "sso"],
                                                  "rate_limit_per_minute": 600})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"] == ["analytics_export", "sso"] and body["rate_limit_per_minute"] == 600
    assert body["tenant_count"] == 0 and body["description"] == "Pro"

    r = await api.put(f"/v1/plans/{name}", json={"features": ["sso"], "rate_limit_per_minute": None})
    assert r.status_code == 200 and r.json()["features"] == ["sso"] and r.json()["rate_limit_per_minute"] is None
    assert r.json()["description"] == ""
    assert (await api.get(f"/v1/plans/{name}")).json()["features"] == ["sso"]
    assert name in [p["name"] for p in (await api.get("/v1/plans")).json()["items"]]

    assert (await api.delete(f"/v1/plans/{name}")).status_code == 204
    assert_problem(await api.get(f"/v1/plans/{name}"), 404, "plan_not_found")
    assert_problem(await api.delete(f"/v1/plans/{name}"), 404, "plan_not_found")
    actions = await audit_rows(stack, name)
    assert [a for a, _ in actions] == ["plan.put", "plan.put", "plan.delete"]
    assert actions[0][1]["created"] is True and actions[1][1]["created"] is False


async def test_a_plan_in_use_cannot_be_deleted(api, stack: Stack):
    name = plan_name()
    assert (await api.put(f"/v1/plans/{name}", json={"features": []})).status_code == 200
    tenant = await new_tenant(api)
    r = await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": name})
    assert r.status_code == 200 and r.json()["plan"] == name
    assert (await api.get(f"/v1/plans/{name}")).json()["tenant_count"] == 1

    body = assert_problem(await api.delete(f"/v1/plans/{name}"), 409, "plan_in_use")
    assert body["tenant_count"] == 1

    r = await api.put(f"/v1/tenants/{tenant['slug']}/plan", json={"plan": None})  # by slug works too
    assert r.status_code == 200 and r.json()["plan"] is None
    assert (await api.delete(f"/v1/plans/{name}")).status_code == 204
    actions = [(a, d.get("plan"), d.get("previous")) for a, d in await audit_rows(stack, tenant["id"])]
    assert ("tenant.plan", name, None) in actions and ("tenant.plan", None, name) in actions


async def test_tenant_plan_and_billing_status(api, stack: Stack):
    tenant = await new_tenant(api)
    assert tenant["plan"] is None and tenant["billing_status"] == "ok"
    assert_problem(await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": plan_name("nope")}),
                   422, "unknown_plan")

    r = await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "past_due"})
    assert r.status_code == 200 and r.json()["billing_status"] == "past_due"
    assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["billing_status"] == "past_due"
    r = await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "ok"})
    assert r.json()["billing_status"] == "ok"
    billing = [d for a, d in await audit_rows(stack, tenant["id"]) if a == "tenant.billing"]
    assert billing == [{"billing_status": "past_due", "previous": "ok"}, {"billing_status": "ok", "previous": "past_due"}]

    assert_problem(await api.put(f"/v1/tenants/{uuid.uuid4()}/billing", json={"billing_status": "ok"}),
                   404, "tenant_not_found")


async def test_feature_overrides_win_over_the_plan(api, stack: Stack):
    name = plan_name()
    await api.put(f"/v1/plans/{name}", json={"features": ["reports", "sso"]})
    tenant = await new_tenant(api)
    await api.put(f"/v1/tenants/{tenant['id']}/plan", json={"plan": name})
    r = await api.get(f"/v1/tenants/{tenant['id']}/features")
    assert r.status_code == 200
    assert r.json() == {"tenant_id": tenant["id"], "plan": name, "plan_features": ["reports", "sso"],
                        "overrides": [], "features": ["reports", "sso"]}

    r = await api.put(f"/v1/tenants/{tenant['id']}/features/sso", json={"enabled": False})
    assert r.status_code == 200 and r.json()["features"] == ["reports"]
    r = await api.put(f"/v1/tenants/{tenant['id']}/features/analytics_export", json={"enabled": True})
    assert r.json()["features"] == ["analytics_export", "reports"]
    assert r.json()["overrides"] == [{"feature": "analytics_export", "enabled": True},
                                     {"feature": "sso", "enabled": False}]

    assert (await api.delete(f"/v1/tenants/{tenant['id']}/features/sso")).status_code == 204
    r = await api.get(f"/v1/tenants/{tenant['slug']}/features")
    assert r.json()["features"] == ["analytics_export", "reports", "sso"]
    assert_problem(await api.delete(f"/v1/tenants/{tenant['id']}/features/sso"), 404, "override_not_found")
    actions = [a for a, _ in await audit_rows(stack, tenant["id"])]
    assert actions.count("tenant.feature.set") == 2 and actions.count("tenant.feature.unset") == 1


async def test_users_belong_to_many_tenants(api, stack: Stack):
    email = f"Ada.{uuid.uuid4().hex[:8]}@Example.com"
    r = await api.post("/v1/users", json={"email": email, "name": "Ada"})
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["email"] == email.lower()
    assert_problem(await api.post("/v1/users", json={"email": email.upper(), "name": "Again"}), 409, "email_taken")
    assert (await api.get(f"/v1/users/{user['id']}")).json() == user

    a, b = await new_tenant(api), await new_tenant(api)
    r = await api.put(f"/v1/tenants/{a['id']}/memberships/{user['id']}", json={"role": "owner"})
    assert r.status_code == 200 and r.json()["role"] == "owner" and r.json()["tenant_slug"] == a["slug"]
    assert (await api.put(f"/v1/tenants/{b['slug']}/memberships/{user['id']}", json={"role": "viewer"})).status_code == 200
    r = await api.put(f"/v1/tenants/{b['id']}/memberships/{user['id']}", json={"role": "admin"})
    assert r.json()["role"] == "admin"

    items = (await api.get(f"/v1/users/{user['id']}/memberships")).json()["items"]
    assert sorted((m["tenant_id"], m["role"]) for m in items) == sorted([(a["id"], "owner"), (b["id"], "admin")])
    items = (await api.get(f"/v1/tenants/{a['id']}/memberships")).json()["items"]
    assert [(m["user_id"], m["email"], m["role"]) for m in items] == [(user["id"], email.lower(), "owner")]

    assert (await api.delete(f"/v1/tenants/{a['id']}/memberships/{user['id']}")).status_code == 204
    assert_problem(await api.delete(f"/v1/tenants/{a['id']}/memberships/{user['id']}"), 404, "membership_not_found")
    assert (await api.get(f"/v1/tenants/{a['id']}/memberships")).json()["items"] == []
    assert_problem(await api.put(f"/v1/tenants/{a['id']}/memberships/{uuid.uuid4()}", json={"role": "owner"}),
                   404, "user_not_found")
    assert_problem(await api.get(f"/v1/users/{uuid.uuid4()}"), 404, "user_not_found")
    assert_problem(await api.get(f"/v1/users/{uuid.uuid4()}/memberships"), 404, "user_not_found")

    assert [a for a, _ in await audit_rows(stack, user["id"])] == ["user.create"]
    actions = [(act, d["role"] if "role" in d else d.get("previous")) for act, d in await audit_rows(stack, b["id"])
               if act.startswith("membership.")]
    assert actions == [("membership.put", "viewer"), ("membership.put", "admin")]


# --- hostile input: always a documented 4xx problem, never a 5xx ---

INVALID = (422, "validation_failed")
MALFORMED = (400, "malformed_json")
TENANT_404 = (404, "tenant_not_found")
USER_404 = (404, "user_not_found")
PLAN_404 = (404, "plan_not_found")

HOSTILE = [
    # plans: path names
    ("plan-upper", "PUT", "/v1/plans/Pro", {"features": []}, INVALID),
    ("plan-short", "PUT", "/v1/plans/p", {"features": []}, INVALID),
    ("plan-long", "PUT", "/v1/plans/" + "p" * 64, {"features": []}, INVALID),
    ("plan-dash", "PUT", "/v1/plans/pro-plan", {"features": []}, INVALID),
    ("plan-newline", "PUT", "/v1/plans/pro%0A", {"features": []}, INVALID),
    ("plan-nul", "PUT", "/v1/plans/pr%00o", {"features": []}, INVALID),
    ("plan-get-nul", "GET", "/v1/plans/pr%00o", None, PLAN_404),
    ("plan-get-newline", "GET", "/v1/plans/pro%0A", None, PLAN_404),
    ("plan-delete-traversal", "DELETE", "/v1/plans/..%2F..%2Fetc", None, (404, "route_not_found")),
    ("plan-get-huge", "GET", "/v1/plans/" + "a" * 5000, None, INVALID),
    # plans: bodies
    ("features-upper", "PUT", "/v1/plans/{plan}", {"features": ["SSO"]}, INVALID),
    ("features-newline", "PUT", "/v1/plans/{plan}", {"features": ["sso\n"]}, INVALID),
    ("features-nul", "PUT", "/v1/plans/{plan}", {"features": ["ss\u0000o"]}, INVALID),
    ("features-number", "PUT", "/v1/plans/{plan}", {"features": [1]}, INVALID),
    ("features-string", "PUT", "/v1/plans/{plan}", {"features": "sso"}, INVALID),
    ("features-object", "PUT", "/v1/plans/{plan}", {"features": {"sso": True}}, INVALID),
    ("features-too-many", "PUT", "/v1/plans/{plan}", {"features": [f"f{i:03d}" for i in range(201)]}, INVALID),
    ("rate-zero", "PUT", "/v1/plans/{plan}", {"rate_limit_per_minute": 0}, INVALID),
    ("rate-negative", "PUT", "/v1/plans/{plan}", {"rate_limit_per_minute": -5}, INVALID),
    ("rate-huge", "PUT", "/v1/plans/{plan}", {"rate_limit_per_minute": 10**40}, None),
    ("rate-bool", "PUT", "/v1/plans/{plan}", {"rate_limit_per_minute": True}, INVALID),
    ("rate-float", "PUT", "/v1/plans/{plan}", {"rate_limit_per_minute": 1.5}, INVALID),
    ("description-nul", "PUT", "/v1/plans/{plan}", {"description": "a\u0000b"}, INVALID),
    ("description-long", "PUT", "/v1/plans/{plan}", {"description": "d" * 501}, INVALID),
    ("plan-unknown-field", "PUT", "/v1/plans/{plan}", {"features": [], "price": 5}, INVALID),
    ("plan-array-body", "PUT", "/v1/plans/{plan}", [], INVALID),
    ("plan-malformed", "PUT", "/v1/plans/{plan}", b'{"features": [', None),
    # a tenant's plan, billing and features
    ("tenant-plan-bad-name", "PUT", "/v1/tenants/{tenant}/plan", {"plan": "Bad Name"}, INVALID),
    ("tenant-plan-newline", "PUT", "/v1/tenants/{tenant}/plan", {"plan": "pro\n"}, INVALID),
    ("tenant-plan-number", "PUT", "/v1/tenants/{tenant}/plan", {"plan": 5}, INVALID),
    ("tenant-plan-missing", "PUT", "/v1/tenants/{tenant}/plan", {}, INVALID),
    ("tenant-key-nul", "PUT", "/v1/tenants/ab%00cd/plan", {"plan": None}, TENANT_404),
    ("tenant-key-unknown", "PUT", "/v1/tenants/no-such-tenant-zz/plan", {"plan": None}, TENANT_404),
    ("tenant-key-nil-uuid", "GET", "/v1/tenants/00000000-0000-0000-0000-000000000000/features", None, TENANT_404),
    ("billing-unknown", "PUT", "/v1/tenants/{tenant}/billing", {"billing_status": "late"}, INVALID),
    ("billing-null", "PUT", "/v1/tenants/{tenant}/billing", {"billing_status": None}, INVALID),
    ("billing-case", "PUT", "/v1/tenants/{tenant}/billing", {"billing_status": "PAST_DUE"}, INVALID),
    ("feature-bad-name", "PUT", "/v1/tenants/{tenant}/features/Bad", {"enabled": True}, INVALID),
    ("feature-newline", "PUT", "/v1/tenants/{tenant}/features/sso%0A", {"enabled": True}, INVALID),
    ("feature-nul", "PUT", "/v1/tenants/{tenant}/features/s%00so", {"enabled": True}, INVALID),
    ("feature-enabled-string", "PUT", "/v1/tenants/{tenant}/features/sso", {"enabled": "yes"}, INVALID),
    ("feature-enabled-missing", "PUT", "/v1/tenants/{tenant}/features/sso", {}, INVALID),
    ("feature-delete-nul", "DELETE", "/v1/tenants/{tenant}/features/s%00so", None, (404, "override_not_found")),
    ("features-tenant-nul", "GET", "/v1/tenants/%00/features", None, TENANT_404),
    # users and memberships
    ("email-no-at", "POST", "/v1/users", {"email": "nobody", "name": "x"}, INVALID),
    ("email-two-ats", "POST", "/v1/users", {"email": "a@b@c", "name": "x"}, INVALID),
    ("email-newline", "POST", "/v1/users", {"email": "a@b.c\n", "name": "x"}, INVALID),
    ("email-nul", "POST", "/v1/users", {"email": "a\u0000@b.c", "name": "x"}, INVALID),
    ("email-space", "POST", "/v1/users", {"email": "a b@c.d", "name": "x"}, INVALID),
    ("email-long", "POST", "/v1/users", {"email": "a" * 320 + "@b.c", "name": "x"}, INVALID),
    ("email-missing", "POST", "/v1/users", {"name": "x"}, INVALID),
    ("user-name-nul", "POST", "/v1/users", {"email": "nul@b.c", "name": "a\u0000"}, INVALID),
    ("user-name-newline", "POST", "/v1/users", {"email": "nl@b.c", "name": "a\n"}, INVALID),
    ("user-unknown-field", "POST", "/v1/users", {"email": "u@b.c", "admin": True}, INVALID),
    ("user-id-not-uuid", "GET", "/v1/users/not-a-uuid", None, USER_404),
    ("user-id-nul", "GET", "/v1/users/%00", None, USER_404),
    ("user-memberships-not-uuid", "GET", "/v1/users/1%20OR%201=1/memberships", None, USER_404),
    ("role-unknown", "PUT", "/v1/tenants/{tenant}/memberships/{user}", {"role": "superuser"}, INVALID),
    ("role-case", "PUT", "/v1/tenants/{tenant}/memberships/{user}", {"role": "Owner"}, INVALID),
    ("role-list", "PUT", "/v1/tenants/{tenant}/memberships/{user}", {"role": ["owner"]}, INVALID),
    ("membership-user-not-uuid", "PUT", "/v1/tenants/{tenant}/memberships/abc", {"role": "owner"}, USER_404),
    ("membership-delete-not-uuid", "DELETE", "/v1/tenants/{tenant}/memberships/abc", None, USER_404),
    ("membership-tenant-nul", "GET", "/v1/tenants/a%00b/memberships", None, TENANT_404),
]


@pytest.fixture(scope="module")
async def targets(api) -> dict[str, str]:
    tenant = await new_tenant(api)
    user = (await api.post("/v1/users", json={"email": f"h.{uuid.uuid4().hex[:8]}@example.com"})).json()
    return {"tenant": tenant["id"], "user": user["id"], "plan": plan_name("hostile")}


@pytest.mark.parametrize(("method", "url", "body", "expected"),
                         [pytest.param(m, u, b, e, id=i) for i, m, u, b, e in HOSTILE])
async def test_hostile_input_gets_a_4xx_problem(api, targets, method, url, body, expected):
    kwargs = {"content": body} if isinstance(body, bytes) else {} if body is None else {"json": body}
    response = await api.request(method, url.format(**targets), **kwargs)
    assert response.status_code < 500, response.text[:500]
    if expected is None:
        assert 400 <= response.status_code < 500 and response.json()["code"], response.text[:500]
    else:
        assert_problem(response, *expected)


async def test_hostile_writes_leave_no_audit_rows(api, targets, stack: Stack):
    await test_hostile_input_gets_a_4xx_problem(api, targets, "PUT", "/v1/plans/{plan}", {"features": ["X"]}, INVALID)
    assert await audit_rows(stack, targets["plan"]) == []


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/v1/plans"), ("GET", "/v1/plans/pro"), ("PUT", "/v1/plans/pro"), ("DELETE", "/v1/plans/pro"),
    ("PUT", "/v1/tenants/{tenant}/plan"), ("PUT", "/v1/tenants/{tenant}/billing"),
    ("GET", "/v1/tenants/{tenant}/features"), ("PUT", "/v1/tenants/{tenant}/features/sso"),
    ("DELETE", "/v1/tenants/{tenant}/features/sso"), ("POST", "/v1/users"), ("GET", "/v1/users/{user}"),
    ("GET", "/v1/users/{user}/memberships"), ("GET", "/v1/tenants/{tenant}/memberships"),
    ("PUT", "/v1/tenants/{tenant}/memberships/{user}"), ("DELETE", "/v1/tenants/{tenant}/memberships/{user}"),
])
async def test_every_endpoint_needs_the_admin_token(api, targets, method, url):
    request = api.build_request(method, url.format(**targets), json={} if method in ("PUT", "POST") else None)
    del request.headers["authorization"]
    assert_problem(await api.send(request), 401, "unauthorized")
    request.headers["authorization"] = "Bearer tpa_wrong"
    assert_problem(await api.send(request), 401, "unauthorized")
