"""The Stripe webhook over HTTP: signatures, recording exactly once, parking and replay."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import msgspec
import stripe
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from tests.conftest import catalog_pool
from tests.control_plane.billing.conftest import (
    NEW_SECRET,
    OLD_SECRET,
    applied_state,
    checkout_completed,
    deliver,
    encode,
    make_tenant,
    new_id,
    sign,
    stripe_event,
    subscription,
    tenant_row,
    worker_applier,
)


async def _post(client: httpx.AsyncClient, payload: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Authorization": ""}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/v1/billing/stripe/webhook", content=payload, headers=headers)


async def test_checkout_completed_links_the_tenant_to_its_customer_and_subscription(billing_api, catalog):
    tenant_id = await make_tenant(catalog)
    customer, sub = new_id("cus"), new_id("sub")
    event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, sub))
    response = await deliver(billing_api, event)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "event_id": event["id"], "state": "applied", "duplicate": False}
    row = await tenant_row(catalog, tenant_id)
    assert (row["stripe_customer_id"], row["stripe_subscription_id"], row["billing_status"]) == (customer, sub, "ok")
    shown = (await billing_api.get(f"/v1/tenants/{tenant_id}")).json()
    assert shown["stripe_customer_id"] == customer and shown["billing_status"] == "ok"
    assert {"paid_until", "past_due_since", "plan"} <= shown.keys()
    listed = (await billing_api.get("/v1/billing/events", params={"state": "applied"})).json()["items"]
    mine = next(item for item in listed if item["id"] == event["id"])
    assert mine["tenant_id"] == str(tenant_id) and mine["effect"]["tenant"]["stripe_subscription_id"] == sub


async def test_the_same_event_three_times_at_once_has_one_effect_and_one_audit_row(billing_api, catalog):
    tenant_id = await make_tenant(catalog, customer=new_id("cus"))
    customer = (await tenant_row(catalog, tenant_id))["stripe_customer_id"]
    event = stripe_event("invoice.payment_failed", {
        "id": new_id("in"), "object": "invoice", "customer": customer, "period_end": int(time.time()) + 86400})
    answers = await asyncio.gather(*(deliver(billing_api, event) for _ in range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True, True]
    audit = await catalog.fetchval("SELECT count(*) FROM audit_log WHERE details->>'event_id' = $1", event["id"])
    dunning = await catalog.fetchval("SELECT count(*) FROM dunning_outbox WHERE event_id = $1", event["id"])
    deliveries = await catalog.fetchval("SELECT deliveries FROM billing_events WHERE id = $1", event["id"])
    assert (audit, dunning, deliveries) == (1, 1, 3)
    assert (await tenant_row(catalog, tenant_id))["billing_status"] == "past_due"
    duplicates = (await billing_api.get("/v1/billing/events", params={"state": "duplicate"})).json()["items"]
    assert event["id"] in {item["id"] for item in duplicates}
    again = await deliver(billing_api, event)  # a later redelivery: still one effect
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert await catalog.fetchval("SELECT count(*) FROM audit_log WHERE details->>'event_id' = $1", event["id"]) == 1


async def test_forged_reserialised_stale_and_missing_signatures_are_refused(billing_api, catalog):
    tenant_id = await make_tenant(catalog)
    event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, new_id("cus"), new_id("sub")))
    payload = encode(event)
    reserialised = json.dumps(json.loads(payload), separators=(",", ":")).encode()  # same event, other bytes
    now = int(time.time())
    cases = {
        "forged": (payload, sign(payload, "whsec_someone_else")),
        "reserialised": (reserialised, sign(payload)),
        "stale": (payload, sign(payload, timestamp=now - 301)),
        "missing": (payload, None),
        "empty": (payload, ""),
        "garbage": (payload, "t=abc,v1=zz"),
        "no v1": (payload, f"t={now},v0=" + "0" * 64),
        "huge": (payload, "t=1," + "v1=" + "a" * 10000),
    }
    for name, (body, signature) in cases.items():
        response = await _post(billing_api, body, signature)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["code"] == "invalid_signature", name
        assert NEW_SECRET not in response.text and OLD_SECRET not in response.text
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
    assert await catalog.fetchval("SELECT count(*) FROM billing_events WHERE id = $1", event["id"]) == 0


async def test_a_rotated_secret_accepts_both_the_old_and_the_new_one(billing_api, catalog):
    for secret in (OLD_SECRET, NEW_SECRET):
        tenant_id = await make_tenant(catalog)
        event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, new_id("cus"), new_id("sub")))
        response = await deliver(billing_api, event, secret=secret, timestamp=int(time.time()) - 299)
        assert response.status_code == 200, response.text
    # and the SDK's own test signer agrees with ours
    payload = encode(stripe_event("ping.unhandled", {"id": new_id("x")}))
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), OLD_SECRET)
    response = await _post(billing_api, payload, header)
    assert response.status_code == 200 and response.json()["state"] == "received"
    assert await applied_state(billing_api, json.loads(payload)["id"]) == "ignored"


async def test_signed_payloads_that_are_not_events_are_refused(billing_api):
    bodies = [b"[]", b"{}", b"not json", b'{"id": "evt_1", "object": "event"}',
              json.dumps({"id": "evt_1", "object": "charge", "type": "x", "created": 1, "data": {"object": {}}}).encode(),
              json.dumps({"id": "evt_1", "object": "event", "type": "x", "created": "yesterday",
                          "data": {"object": {}}}).encode(),
              json.dumps({"id": "evt_1", "object": "event", "type": "x", "created": 10 ** 30,
                          "data": {"object": {}}}).encode(),
              json.dumps({"id": "evt_" + "1" * 300, "object": "event", "type": "x", "created": 1,
                          "data": {"object": {}}}).encode(),
              json.dumps({"id": "evt_1'; drop", "object": "event", "type": "x", "created": 1,
                          "data": {"object": {}}}).encode(),
              json.dumps({"id": "evt_nul", "object": "event", "type": "x", "created": 1,
                          "data": {"object": {"name": "a\u0000b"}}}).encode(),
              b"\xff\xfe not utf-8"]
    for body in bodies:
        response = await _post(billing_api, body, sign(body))
        assert response.status_code == 400, (body[:60], response.text)
        assert response.json()["code"] in ("invalid_event", "invalid_signature"), body[:60]
    big = b'{"pad": "' + b"x" * (600 * 1024) + b'"}'
    response = await _post(billing_api, big, sign(big))
    assert response.status_code == 413


async def test_other_event_types_are_recorded_as_ignored(billing_api):
    event = stripe_event("charge.refunded", {"id": new_id("ch"), "object": "charge"})
    response = await deliver(billing_api, event)
    assert response.status_code == 200 and response.json()["state"] == "ignored"
    listed = (await billing_api.get("/v1/billing/events", params={"state": "ignored"})).json()["items"]
    assert event["id"] in {item["id"] for item in listed}


async def test_an_unknown_customer_is_parked_and_replayed_once_the_tenant_exists(billing_api, catalog):
    customer = new_id("cus")
    event = stripe_event("invoice.paid", {"id": new_id("in"), "object": "invoice", "customer": customer,
                                          "lines": {"data": [{"period": {"end": int(time.time()) + 86400 * 30}}]}})
    response = await deliver(billing_api, event)
    assert response.status_code == 200 and response.json()["state"] == "parked"
    parked = (await billing_api.get("/v1/billing/events", params={"state": "parked"})).json()["items"]
    mine = next(item for item in parked if item["id"] == event["id"])
    assert mine["tenant_id"] is None and mine["effect"]["reason"] == "unknown_customer"

    tenant_id = await make_tenant(catalog, customer=customer)
    replayed = await billing_api.post(f"/v1/billing/events/{event['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["state"] == "applied" and replayed.json()["tenant_id"] == str(tenant_id)
    assert (await tenant_row(catalog, tenant_id))["paid_until"] is not None
    again = await billing_api.post(f"/v1/billing/events/{event['id']}/replay")
    assert again.status_code == 409 and again.json()["code"] == "event_not_replayable"
    missing = await billing_api.post("/v1/billing/events/evt_nothing_here/replay")
    assert missing.status_code == 404 and missing.json()["code"] == "billing_event_not_found"


async def test_a_parked_event_scrubbed_by_an_erasure_is_not_replayable(billing_api, catalog):
    event = stripe_event("invoice.paid", {"id": new_id("in"), "object": "invoice", "customer": new_id("cus"),
                                          "customer_email": "someone@example.org"})
    assert (await deliver(billing_api, event)).json()["state"] == "parked"
    # what the erasure's scrub leaves (provisioning/erasure_billing.py)
    await catalog.execute("UPDATE billing_events SET payload = jsonb_build_object('id', id, 'type', type, "
                          "'erased', true) WHERE id = $1", event["id"])
    replayed = await billing_api.post(f"/v1/billing/events/{event['id']}/replay")
    assert replayed.status_code == 409 and replayed.json()["code"] == "event_not_replayable", replayed.text
    assert "erased" in replayed.json()["detail"]
    assert (await billing_api.get(f"/v1/billing/events/{event['id']}")).json()["state"] == "parked"


async def test_an_event_of_an_erased_tenant_arriving_after_its_erasure_keeps_only_its_id_and_type(
        billing_api, catalog):
    erased_id, live_id = await make_tenant(catalog, status="deleted"), await make_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_erasures (tenant_id, completed_at) VALUES ($1, now())", erased_id)
    sent = {}
    for tenant_id in (erased_id, live_id):  # Stripe's answer to the erasure's DELETE of the customer
        sent[tenant_id] = stripe_event("customer.deleted", {
            "id": new_id("cus"), "object": "customer", "email": f"{tenant_id.hex[:8]}@example.org",
            "name": "Deleted Payer", "metadata": {"tenant_id": str(tenant_id)}})
        assert (await deliver(billing_api, sent[tenant_id])).status_code == 200
    for event in sent.values():
        assert await applied_state(billing_api, event["id"]) == "ignored"
    rows = {r["id"]: json.loads(r["payload"]) for r in await catalog.fetch(
        "SELECT id, payload::text AS payload FROM billing_events WHERE id = ANY($1)", [e["id"] for e in sent.values()])}
    assert rows[sent[erased_id]["id"]] == {"id": sent[erased_id]["id"], "type": "customer.deleted", "erased": True}
    assert rows[sent[live_id]["id"]]["data"]["object"]["email"] == f"{live_id.hex[:8]}@example.org"


async def test_a_checkout_for_a_tenant_we_do_not_know_is_parked_never_guessed(billing_api, catalog):
    event = stripe_event("checkout.session.completed", checkout_completed(uuid.uuid4(), new_id("cus"), new_id("sub")))
    response = await deliver(billing_api, event)
    assert response.json()["state"] == "parked"
    # a tenant already linked to another customer is not re-pointed
    tenant_id = await make_tenant(catalog, customer=new_id("cus"))
    event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, new_id("cus"), new_id("sub")))
    response = await deliver(billing_api, event)
    assert response.json()["state"] == "parked"


async def test_the_admin_routes_need_the_token_and_the_webhook_does_not(billing_http):
    async with httpx.AsyncClient(base_url=billing_http.url) as anonymous:
        assert (await anonymous.get("/v1/billing/events")).status_code == 401
        assert (await anonymous.post("/v1/billing/events/evt_x/replay")).status_code == 401
        event = stripe_event("charge.succeeded", {"id": new_id("ch")})
        assert (await deliver(anonymous, event, wait=False)).status_code == 200


async def test_an_event_that_fails_is_kept_as_failed_and_replays_once_the_cause_is_fixed(billing_settings, pg):
    """BILLING_FREE_PLAN names a plan that does not exist yet: the deletion cannot be applied, is
    rolled back whole, listed as failed, and applies on replay once the plan exists."""
    free = f"free_{uuid.uuid4().hex[:8]}"
    # a catalog of its own: the session's API, without the free plan setting, would apply it too
    async with catalog_pool(pg, "catalog_billing_failing") as catalog:
        settings = msgspec.structs.replace(billing_settings, billing_free_plan=free,
                                           catalog_database_url=pg.dsn("catalog_billing_failing"))
        await _fail_then_replay(settings, catalog, free)


async def _fail_then_replay(settings, catalog, free: str) -> None:
    customer, sub = new_id("cus"), new_id("sub")
    tenant_id = await make_tenant(catalog, customer=customer)
    await catalog.execute("UPDATE tenants SET stripe_subscription_id = $2 WHERE id = $1", tenant_id, sub)
    event = stripe_event("customer.subscription.deleted", subscription(sub, customer, new_id("price"), status="canceled"))
    async with worker_applier(settings), AsyncTestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {settings.admin_token}"
        response = await deliver(client, event)
        assert response.status_code == 200 and response.json()["state"] == "failed"
        row = await tenant_row(catalog, tenant_id)
        assert (row["stripe_subscription_id"], row["status"]) == (sub, "active")  # nothing half-applied
        failed = (await client.get("/v1/billing/events", params={"state": "failed"})).json()["items"]
        mine = next(item for item in failed if item["id"] == event["id"])
        assert mine["error"] and "free_" not in mine["error"]  # the error's kind, not its text
        await catalog.execute("INSERT INTO plans (name) VALUES ($1)", free)
        replayed = await client.post(f"/v1/billing/events/{event['id']}/replay")
        assert replayed.status_code == 200 and replayed.json()["state"] == "applied", replayed.text
    row = await tenant_row(catalog, tenant_id)
    assert (row["stripe_subscription_id"], row["plan"], row["status"]) == (None, free, "active")
