"""GET /v1/events: newest first with a cursor, or oldest first after an id (the consumer's feed, which
never skips an event whose transaction commits late); filters by type, tenant and delivery state; a
read scope is enough; hostile query parameters are 422 problems, never 500. POST
/v1/events/{id}/redeliver: an abandoned event pending again, audited; anything else 404 or 409."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import pytest

from provisioning import queue
from tests.conftest import Stack, create_active_tenant, unique_slug


async def _suspended_and_resumed(api: httpx.AsyncClient) -> dict:
    tenant = await create_active_tenant(api, unique_slug("eva"))
    for status in ("suspended", "active"):
        assert (await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": status})).status_code == 200
    return tenant


async def test_newest_first_pages_back_and_filters(api):
    tenant = await _suspended_and_resumed(api)
    r = await api.get("/v1/events", params={"tenant": tenant["slug"]})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [e["type"] for e in page["items"]] == ["tenant.resumed", "tenant.suspended", "tenant.created"]
    assert page["next_cursor"] is None and page["next_after"] is None
    created = page["items"][-1]
    assert created["data"] == {"slug": tenant["slug"], "tier": tenant["tier"], "server": "local"}
    assert set(created) == {"id", "type", "tenant_id", "operation_id", "occurred_at", "data", "delivery"}
    assert created["delivery"] == {"state": "pending", "attempts": 0, "last_error": None, "delivered_at": None,
                                   "abandoned_at": None}  # no webhook in this stack
    seen, cursor = [], None
    while True:
        r = await api.get("/v1/events", params={"tenant": tenant["id"], "limit": 1, **({"cursor": cursor} if cursor else {})})
        seen += [e["id"] for e in r.json()["items"]]
        if not (cursor := r.json()["next_cursor"]):
            break
    assert seen == [e["id"] for e in page["items"]]
    r = await api.get("/v1/events", params={"tenant": tenant["id"], "type": "tenant.suspended"})
    assert [e["type"] for e in r.json()["items"]] == ["tenant.suspended"]
    r = await api.get("/v1/events", params={"type": "tenant.created", "limit": 500})
    assert {e["type"] for e in r.json()["items"]} == {"tenant.created"}


async def test_a_consumer_reads_after_the_last_id_it_handled(api):
    tenant = await _suspended_and_resumed(api)
    newest = (await api.get("/v1/events", params={"tenant": tenant["id"]})).json()["items"]
    created_id = newest[-1]["id"]
    # the feed holds events back while any older transaction on the catalog's server is open (a
    # worker's or another test's), so a consumer polls, as this one does
    deadline = time.monotonic() + 60
    while True:
        feed = (await api.get("/v1/events", params={"tenant": tenant["id"], "after": created_id})).json()
        if len(feed["items"]) >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert [e["type"] for e in feed["items"]] == ["tenant.suspended", "tenant.resumed"]  # oldest first
    assert feed["next_after"] == newest[0]["id"] and feed["next_cursor"] is None
    again = (await api.get("/v1/events", params={"tenant": tenant["id"], "after": feed["next_after"]})).json()
    assert again == {"items": [], "next_cursor": None, "next_after": feed["next_after"]}
    r = await api.get("/v1/events", params={"tenant": tenant["id"], "after": 0, "limit": 2})
    assert [e["type"] for e in r.json()["items"]] == ["tenant.created", "tenant.suspended"]


async def test_the_feed_waits_for_an_earlier_event_still_uncommitted(api, stack: Stack):
    """An event whose transaction commits after a later id's must not be skipped by a consumer that
    already moved past that later id: the later one is held back until the earlier one commits."""
    slow_tenant = await create_active_tenant(api, unique_slug("evs"))
    fast_tenant = await create_active_tenant(api, unique_slug("evf"))
    mark = (await api.get("/v1/events", params={"limit": 1})).json()["items"][0]["id"]
    slow = await asyncpg.connect(stack.catalog_dsn)
    try:
        tx = slow.transaction()
        await tx.start()
        await queue.record_done(slow, uuid.uuid4(), "suspend_tenant", uuid.UUID(slow_tenant["id"]), "set_status")
        fast = await asyncpg.connect(stack.catalog_dsn)  # commits at once, with a later id
        try:
            await queue.record_done(fast, uuid.uuid4(), "suspend_tenant", uuid.UUID(fast_tenant["id"]), "set_status")
        finally:
            await fast.close()
        # newest first shows the committed one; the feed holds it back behind the open transaction
        newest = (await api.get("/v1/events", params={"tenant": fast_tenant["id"], "type": "tenant.suspended"})).json()
        assert len(newest["items"]) == 1
        held = (await api.get("/v1/events", params={"after": mark, "type": "tenant.suspended"})).json()
        assert fast_tenant["id"] not in [e["tenant_id"] for e in held["items"]]
        await tx.commit()
    finally:
        await slow.close()
    deadline = time.monotonic() + 30
    while True:
        feed = (await api.get("/v1/events", params={"after": mark, "type": "tenant.suspended", "limit": 500})).json()
        order = [e["tenant_id"] for e in feed["items"] if e["tenant_id"] in (slow_tenant["id"], fast_tenant["id"])]
        if len(order) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert order == [slow_tenant["id"], fast_tenant["id"]]  # both, the earlier id first


async def test_a_read_only_key_lists_events_and_a_billing_key_cannot(api):
    read_only = (await api.post("/v1/admin-keys", json={"name": unique_slug("evk"), "scopes": ["tenants:read"]})).json()
    billing = (await api.post("/v1/admin-keys", json={"name": unique_slug("evk"), "scopes": ["billing"]})).json()
    r = await api.get("/v1/events", headers={"Authorization": f"Bearer {read_only['token']}"})
    assert r.status_code == 200
    r = await api.get("/v1/events", headers={"Authorization": f"Bearer {billing['token']}"})
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


@pytest.mark.parametrize(("params", "code"), [
    ({"type": "tenant.exploded"}, "validation_failed"),
    ({"type": "'; DROP TABLE tenant_events; --"}, "validation_failed"),
    ({"after": "-1"}, "validation_failed"),
    ({"after": "abc"}, "validation_failed"),
    ({"after": str(2**64)}, "validation_failed"),
    ({"limit": "0"}, "validation_failed"),
    ({"limit": "501"}, "validation_failed"),
    ({"cursor": "not-a-cursor"}, "invalid_cursor"),
    ({"cursor": "x" * 201}, "validation_failed"),
    ({"cursor": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "after": "1"}, "invalid_cursor"),
    ({"tenant": "x" * 101}, "validation_failed"),
    ({"state": "lost"}, "validation_failed"),
])
async def test_hostile_query_parameters_are_422(api, params, code):
    r = await api.get("/v1/events", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == code


@pytest.mark.parametrize("tenant", ["no-such-tenant", "' OR 1=1 --", "\x00", str(uuid.uuid4())])
async def test_an_unknown_tenant_is_404(api, tenant):
    r = await api.get("/v1/events", params={"tenant": tenant})
    assert r.status_code == 404 and r.json()["code"] == "tenant_not_found", r.text


async def _abandoned(api: httpx.AsyncClient, stack: Stack) -> tuple[dict, dict]:
    """A tenant whose `tenant.suspended` event the (imagined) webhook gave up on."""
    tenant = await _suspended_and_resumed(api)
    items = (await api.get("/v1/events", params={"tenant": tenant["id"], "type": "tenant.suspended"})).json()["items"]
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.execute("UPDATE tenant_events SET attempts = 9, last_error = 'HTTP 503', abandoned_at = now(), "
                           "pending_since = now() - interval '80 hours' WHERE id = $1", items[0]["id"])
    finally:
        await conn.close()
    return tenant, items[0]


async def test_an_abandoned_event_is_listed_and_redelivered_once_audited(api, stack: Stack):
    tenant, event = await _abandoned(api, stack)
    r = await api.get("/v1/events", params={"tenant": tenant["id"], "state": "abandoned"})
    assert [e["id"] for e in r.json()["items"]] == [event["id"]]
    listed = r.json()["items"][0]["delivery"]
    assert (listed["state"], listed["attempts"], listed["last_error"]) == ("abandoned", 9, "HTTP 503")
    assert listed["abandoned_at"] is not None
    pending = (await api.get("/v1/events", params={"tenant": tenant["id"], "state": "pending"})).json()["items"]
    assert [e["type"] for e in pending] == ["tenant.resumed", "tenant.created"]

    r = await api.post(f"/v1/events/{event['id']}/redeliver")
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] == event["id"] and again["data"] == event["data"]
    # the attempts start again (so do the retries' backoff); the audit row keeps what it had
    assert again["delivery"] == {"state": "pending", "attempts": 0, "last_error": "HTTP 503", "delivered_at": None,
                                 "abandoned_at": None}
    r = await api.post(f"/v1/events/{event['id']}/redeliver")  # pending now: nothing to send again
    assert r.status_code == 409 and r.json()["code"] == "event_not_abandoned" and r.json()["state"] == "pending"
    audit = (await api.get("/v1/audit", params={"action": "event.redeliver"})).json()["items"]
    mine = [a for a in audit if a["target_id"] == str(event["id"])]
    assert len(mine) == 1 and mine[0]["target_type"] == "event"
    assert mine[0]["details"] == {"type": "tenant.suspended", "tenant_id": tenant["id"], "attempts": 9,
                                  "last_error": "HTTP 503"}
    assert (await api.get("/v1/events", params={"tenant": tenant["id"], "state": "abandoned"})).json()["items"] == []


async def test_a_delivered_event_is_not_redelivered(api, stack: Stack):
    tenant = await _suspended_and_resumed(api)
    event = (await api.get("/v1/events", params={"tenant": tenant["id"], "limit": 1})).json()["items"][0]
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.execute("UPDATE tenant_events SET delivered_at = now(), attempts = 1 WHERE id = $1", event["id"])
    finally:
        await conn.close()
    r = await api.post(f"/v1/events/{event['id']}/redeliver")
    assert r.status_code == 409 and r.json()["state"] == "delivered"
    r = await api.get("/v1/events", params={"tenant": tenant["id"], "state": "delivered"})
    assert [e["id"] for e in r.json()["items"]] == [event["id"]]


async def test_redelivery_needs_a_write_scope(api, stack: Stack):
    _, event = await _abandoned(api, stack)
    read_only = (await api.post("/v1/admin-keys", json={"name": unique_slug("evk"), "scopes": ["tenants:read"]})).json()
    r = await api.post(f"/v1/events/{event['id']}/redeliver", headers={"Authorization": f"Bearer {read_only['token']}"})
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


@pytest.mark.parametrize("event_id", ["999999999999", "0", str(2**63), "-1", "abc", "1.5", "%201", "1%00", "%D9%A3",
                                      "%ED%A0%80", "9" * 40])
async def test_redelivering_what_is_no_event_is_404_never_500(api, event_id):
    r = await api.post(f"/v1/events/{event_id}/redeliver")
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == "event_not_found"


async def test_a_tenants_abandoned_events_are_redelivered_a_page_at_a_time(api, stack: Stack):
    tenant, suspended = await _abandoned(api, stack)
    _, other = await _abandoned(api, stack)  # another tenant's: not named, not touched
    resumed = (await api.get("/v1/events", params={"tenant": tenant["id"], "type": "tenant.resumed"})).json()["items"][0]
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.execute("UPDATE tenant_events SET abandoned_at = now() WHERE id = $1", resumed["id"])
    finally:
        await conn.close()
    first = await api.post("/v1/events/redeliver", json={"tenant": tenant["slug"], "limit": 1})
    assert first.status_code == 200, first.text
    assert first.json() == {"ids": [suspended["id"]], "more": True}  # the oldest first
    second = (await api.post("/v1/events/redeliver", json={"tenant": tenant["id"]})).json()
    assert second == {"ids": [resumed["id"]], "more": False}
    assert (await api.post("/v1/events/redeliver", json={"tenant": tenant["id"]})).json() == {"ids": [], "more": False}
    states = {e["id"]: e["delivery"]["state"] for e in
              (await api.get("/v1/events", params={"limit": 500})).json()["items"]}
    assert (states[suspended["id"]], states[resumed["id"]], states[other["id"]]) == ("pending", "pending", "abandoned")
    audit = (await api.get("/v1/audit", params={"action": "event.redeliver", "limit": 500})).json()["items"]
    mine = [a["details"]["ids"] for a in audit if a["target_type"] == "events"
            and a["details"].get("tenant_id") == tenant["id"]]
    assert sorted(mine) == [[suspended["id"]], [resumed["id"]]]
    by_type = (await api.post("/v1/events/redeliver", json={"type": "tenant.suspended", "limit": 500})).json()
    assert other["id"] in by_type["ids"] and by_type["more"] is False


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 422, "validation_failed"),
    ({"type": "tenant.exploded"}, 422, "validation_failed"),
    ({"tenant": "x", "limit": 501}, 422, "validation_failed"),
    ({"tenant": "x", "limit": 0}, 422, "validation_failed"),
    ({"tenant": ""}, 422, "validation_failed"),
    ({"tenant": "x", "extra": 1}, 422, "validation_failed"),
    ({"tenant": "no-such-tenant"}, 404, "tenant_not_found"),
    ({"tenant": "' OR 1=1 --"}, 404, "tenant_not_found"),
    ({"tenant": "\x00"}, 404, "tenant_not_found"),
])
async def test_a_bulk_redelivery_that_names_nothing_sendable_is_a_problem(api, body, status, code):
    r = await api.post("/v1/events/redeliver", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == code
