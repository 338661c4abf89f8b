"""The platform admins' lists (issue #14): fleet migration runs, users, the audit log and the
overview, each filtered and keyset-paged newest first; hostile filters get a 4xx problem."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from migrations import runner
from tests.conftest import create_active_tenant, unique_slug


async def walk(api, path: str, **params) -> list[dict]:
    """Every item of a list, one per page, following next_cursor to its end."""
    items, cursor = [], None
    while True:
        r = await api.get(path, params={**params, "limit": 1, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


async def test_users_are_listed_newest_first_and_found_by_email_prefix(api):
    prefix = unique_slug("u")
    made = []
    for i in range(3):
        r = await api.post("/v1/users", json={"email": f"{prefix}-{i}@example.com", "name": f"User {i}"})
        assert r.status_code == 201, r.text
        made.append(r.json())
    assert await walk(api, "/v1/users", email=prefix.upper()) == made[::-1]
    assert (await api.get("/v1/users", params={"email": f"{prefix}-1"})).json()["items"] == [made[1]]
    # LIKE wildcards are taken literally
    assert (await api.get("/v1/users", params={"email": "%"})).json()["items"] == []
    assert (await api.get("/v1/users", params={"email": prefix[:1] + "_"})).json()["items"] == []


async def test_the_audit_log_by_tenant_actor_action_and_time(api):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    tenant = await create_active_tenant(api)
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "active"})
    entries = await walk(api, "/v1/audit", tenant=tenant["slug"])
    assert [e["action"] for e in entries][-1] == "tenant.create"
    assert {"tenant.create"} < {e["action"] for e in entries}
    assert all(e["target_id"] == tenant["id"] and e["actor"] == "api-key:bootstrap" for e in entries)
    ats = [e["at"] for e in entries]
    assert ats == sorted(ats, reverse=True)
    only = (await api.get("/v1/audit", params={"tenant": tenant["id"], "action": "tenant.create"})).json()["items"]
    assert [e["action"] for e in only] == ["tenant.create"]
    recent = (await api.get("/v1/audit", params={"since": before.isoformat(), "actor": "api-key:bootstrap",
                                                 "limit": 500})).json()["items"]
    assert {e["id"] for e in entries} <= {e["id"] for e in recent}
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert (await api.get("/v1/audit", params={"since": later})).json()["items"] == []
    assert (await api.get("/v1/audit", params={"actor": "nobody-" + unique_slug()})).json()["items"] == []


async def test_migration_runs_are_listed_with_their_counts(api):
    tenant = await create_active_tenant(api)
    r = await api.post("/v1/migrations", json={"target": "head", "tenants": [tenant["slug"]], "canary": 0})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    for _ in range(300):  # ended, so that its state holds still while the lists are read
        if (await api.get(f"/v1/migrations/{run_id}")).json()["state"] != "running":
            break
        await asyncio.sleep(0.1)
    page = (await api.get("/v1/migrations", params={"limit": 500})).json()
    mine = [run for run in page["items"] if run["id"] == run_id]
    assert mine and sum(mine[0]["counts"].values()) == 1 and mine[0]["target_revision"] == runner.head(runner.DEMO_TREE)
    assert set(mine[0]["counts"]) >= {"pending", "queued", "succeeded", "failed", "skipped"}
    created = [run["created_at"] for run in page["items"]]
    assert created == sorted(created, reverse=True)
    state = mine[0]["state"]
    assert run_id in {run["id"] for run in (await api.get("/v1/migrations", params={"state": state, "limit": 500})).json()["items"]}
    first = (await api.get("/v1/migrations", params={"limit": 1})).json()
    if first["next_cursor"]:
        second = (await api.get("/v1/migrations", params={"limit": 1, "cursor": first["next_cursor"]})).json()
        assert second["items"][0]["id"] != first["items"][0]["id"]


async def test_the_overview_counts_the_fleet(api):
    first = (await api.get("/v1/overview")).json()
    await create_active_tenant(api)
    r = await api.get("/v1/overview")
    assert r.status_code == 200, r.text
    now = r.json()
    assert now["tenants_by_status"]["active"] == first["tenants_by_status"].get("active", 0) + 1
    assert now["tenants_by_tier"]["dedicated"] == first["tenants_by_tier"].get("dedicated", 0) + 1
    assert now["head_revision"] == runner.head(runner.DEMO_TREE)
    assert now["operations_by_state"]["succeeded"] > first["operations_by_state"].get("succeeded", 0)
    assert now["failed_operations"] == now["operations_by_state"].get("failed", 0)
    local = next(s for s in now["servers"] if s["name"] == "local")
    assert local["tenants"] == next(s for s in first["servers"] if s["name"] == "local")["tenants"] + 1
    assert 0 < local["fill"] == pytest.approx(local["tenants"] / local["capacity_databases"], abs=1e-4)


async def test_the_overview_counts_spares_from_the_latest_reconciliation(api):
    report = (await api.post("/v1/reconciliation")).json()
    found = sum(1 for s in report["spares"] if s["server"] == "local")
    now = (await api.get("/v1/overview")).json()
    local = next(s for s in now["servers"] if s["name"] == "local")
    assert local["spares"] == found and now["spares_counted_at"] is not None


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/v1/users", {"email": "a\x00b"}, 422, "validation_failed"),
    ("/v1/users", {"email": "x" * 321}, 422, "validation_failed"),
    ("/v1/users", {"cursor": "%%%"}, 422, "invalid_cursor"),
    ("/v1/users", {"limit": "many"}, 422, "validation_failed"),
    ("/v1/audit", {"since": "yesterday"}, 422, "validation_failed"),
    ("/v1/audit", {"actor": "a\nb"}, 422, "validation_failed"),
    ("/v1/audit", {"action": "x" * 65}, 422, "validation_failed"),
    ("/v1/audit", {"tenant": "no-such-tenant-" + "x" * 10}, 404, "tenant_not_found"),
    ("/v1/audit", {"cursor": "A" * 40}, 422, "invalid_cursor"),
    ("/v1/audit", {"limit": 0}, 422, "validation_failed"),
    ("/v1/migrations", {"state": "bogus"}, 422, "validation_failed"),
    ("/v1/migrations", {"cursor": "bm9wZQ"}, 422, "invalid_cursor"),
    ("/v1/migrations", {"limit": 501}, 422, "validation_failed"),
])
async def test_hostile_filters_get_a_problem(api, path, params, status, code):
    r = await api.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == code


async def test_the_lists_need_the_admin_token(api):
    for path in ("/v1/operations", "/v1/migrations", "/v1/users", "/v1/audit", "/v1/overview"):
        r = await api.get(path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized", path
