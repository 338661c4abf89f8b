"""Operations through the admin API: per-tenant history, suspend/resume recorded, retry of a failed
operation from its failed step, one open operation per tenant."""

from __future__ import annotations

import asyncpg

from tests.conftest import (
    Stack,
    add_unreachable_server,
    create_active_tenant,
    unique_slug,
    wait_for,
)


async def test_suspend_and_resume_are_recorded_operations(api):
    tenant = await create_active_tenant(api)
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "active"})
    ops = (await api.get(f"/v1/tenants/{tenant['slug']}/operations")).json()["items"]
    assert [o["kind"] for o in ops] == ["resume_tenant", "suspend_tenant", "create_tenant"]
    assert all(o["state"] == "succeeded" for o in ops)
    assert ops[0]["steps"][0]["name"] == "set_status"


async def test_a_failed_operation_resumes_from_its_failed_step(api, stack: Stack):
    broken = await add_unreachable_server(stack)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        r = await api.post("/v1/tenants", json={"slug": unique_slug("f"), "name": "Fails", "server": broken})
        tenant_id, op_id = r.json()["tenant"]["id"], r.json()["operation_id"]
        failed = await wait_for(api, tenant_id, "failed", timeout=60)
        op = (await api.get(f"/v1/operations/{op_id}")).json()
        assert op["state"] == "failed" and "ConnectionRefused" in op["error"]
        failed_steps = [s for s in op["steps"] if s["state"] == "failed"]
        assert [s["name"] for s in failed_steps] == ["ensure_template"] and failed_steps[0]["attempts"] == 5
        assert failed["status"] == "failed"

        # retried while the cause is still there: queued again, the tenant provisioning again (the
        # worker keeps failing at the same step, so neither can have moved on yet)
        r = await api.post(f"/v1/operations/{op_id}/retry")
        assert r.status_code == 202 and r.json()["state"] == "queued"
        assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "provisioning"
        # then the admin fixes the cause (here: the placement moves to a working server); the next
        # attempt succeeds
        await catalog.execute("UPDATE placements SET server_id = (SELECT id FROM database_servers WHERE name = 'local')"
                              " WHERE tenant_id = $1::uuid", tenant_id)
        await wait_for(api, tenant_id, "active")
        op = (await api.get(f"/v1/operations/{op_id}")).json()
        assert op["state"] == "succeeded" and all(s["state"] == "succeeded" for s in op["steps"])
        assert op["steps"][0]["attempts"] == 1  # place_tenant was not run again
        r = await api.post(f"/v1/operations/{op_id}/retry")
        assert r.status_code == 409 and r.json()["code"] == "operation_not_retryable"
    finally:
        await catalog.close()


async def test_one_open_operation_per_tenant(api, stack: Stack):
    broken = await add_unreachable_server(stack)
    r = await api.post("/v1/tenants", json={"slug": unique_slug("b"), "name": "Busy", "server": broken})
    tenant_id, op_id = r.json()["tenant"]["id"], r.json()["operation_id"]
    r = await api.delete(f"/v1/tenants/{tenant_id}")  # the create is still retrying
    assert r.status_code == 409
    assert r.json()["code"] == "operation_in_progress" and r.json()["operation_id"] == op_id
    await wait_for(api, tenant_id, "failed")


async def test_waiting_on_an_operation_answers_when_it_ends(api, stack: Stack):
    """Workers announce every ended operation (succeeded, or failed for good) on the catalog;
    `?wait=` holds the answer until then, or until the wait is over."""
    import asyncio
    import time

    from contracts.channels import OPERATION_DONE_CHANNEL

    heard: list[str] = []
    listener = await asyncpg.connect(stack.catalog_dsn)
    await listener.add_listener(OPERATION_DONE_CHANNEL, lambda *args: heard.append(args[3]))
    try:
        r = await api.post("/v1/tenants", json={"slug": unique_slug("w"), "name": "Waited"})
        op_id = r.json()["operation_id"]
        op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 30})).json()
        assert op["state"] == "succeeded"
        assert (await api.get(f"/v1/tenants/{op['tenant_id']}")).json()["status"] == "active"
        for _ in range(100):
            if op_id in heard:
                break
            await asyncio.sleep(0.05)
        assert op_id in heard  # announced by the worker, at its commit

        broken = await add_unreachable_server(stack)  # an operation that stays open (retrying) for a while
        r = await api.post("/v1/tenants", json={"slug": unique_slug("w"), "name": "Open", "server": broken})
        open_id, tenant_id = r.json()["operation_id"], r.json()["tenant"]["id"]
        started = time.monotonic()
        op = (await api.get(f"/v1/operations/{open_id}", params={"wait": 0.6})).json()
        assert op["state"] in ("queued", "running") and 0.55 <= time.monotonic() - started < 3
        await wait_for(api, tenant_id, "failed", timeout=60)
        for _ in range(100):
            if open_id in heard:
                break
            await asyncio.sleep(0.05)
        assert open_id in heard  # a final failure is announced too
    finally:
        await listener.close()


async def test_a_wait_out_of_range_is_a_clear_error(api):
    tenant = await create_active_tenant(api)
    op_id = (await api.get(f"/v1/tenants/{tenant['id']}/operations")).json()["items"][0]["id"]
    for bad in ("-1", "31", "soon", "nan"):
        r = await api.get(f"/v1/operations/{op_id}", params={"wait": bad})
        assert r.status_code == 422 and r.json()["code"] == "validation_failed", (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await api.get(f"/v1/operations/{op_id}", params={"wait": "2.5"})).json()["state"] == "succeeded"
    r = await api.get(f"/v1/operations/{'0' * 8}-0000-0000-0000-{'0' * 12}", params={"wait": 5})
    assert r.status_code == 404


async def test_the_fleet_list_filters_and_pages_newest_first(api):
    tenant = await create_active_tenant(api)
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})
    await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "active"})
    r = await api.get("/v1/operations", params={"tenant": tenant["slug"]})
    assert r.status_code == 200, r.text
    assert [o["kind"] for o in r.json()["items"]] == ["resume_tenant", "suspend_tenant", "create_tenant"]
    assert r.json()["next_cursor"] is None
    only = (await api.get("/v1/operations", params={"tenant": tenant["id"], "kind": "suspend_tenant"})).json()
    assert [o["kind"] for o in only["items"]] == ["suspend_tenant"]

    # one at a time: every operation once, in order, the last page without a cursor
    seen, cursor = [], None
    while True:
        page = (await api.get("/v1/operations", params={"tenant": tenant["slug"], "limit": 1,
                                                        **({"cursor": cursor} if cursor else {})})).json()
        seen += [o["kind"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["resume_tenant", "suspend_tenant", "create_tenant"]

    # across the fleet, by state
    fleet = (await api.get("/v1/operations", params={"state": "succeeded", "limit": 500})).json()["items"]
    assert fleet and all(o["state"] == "succeeded" for o in fleet)
    created = [o["created_at"] for o in fleet]
    assert created == sorted(created, reverse=True)
    assert not (await api.get("/v1/operations", params={"state": "running", "tenant": tenant["slug"]})).json()["items"]


async def test_the_fleet_list_refuses_bad_filters(api):
    for params, status, code in [
        ({"state": "bogus"}, 422, "validation_failed"),
        ({"kind": "DROP TABLE"}, 422, "validation_failed"),
        ({"kind": "a\u0000b"}, 422, "validation_failed"),
        ({"limit": 0}, 422, "validation_failed"),
        ({"limit": 501}, 422, "validation_failed"),
        ({"cursor": "not-a-cursor"}, 422, "invalid_cursor"),
        ({"cursor": "A" * 40}, 422, "invalid_cursor"),
        ({"tenant": unique_slug()}, 404, "tenant_not_found"),
        ({"tenant": "x" * 101}, 422, "validation_failed"),
    ]:
        r = await api.get("/v1/operations", params=params)
        assert r.status_code == status, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if code:
            assert r.json()["code"] == code, (params, r.text)
        if code == "validation_failed":  # the error names what was sent, not the handler's argument
            assert [e["key"] for e in r.json()["errors"]] == list(params), r.text
