"""Outbound calls with the real SDK against the fake Stripe API: checkout, portal, the tenant's
customer made once even when the answer is lost, and 503 without an API key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from tests.control_plane.billing.conftest import (
    API_KEY,
    NEW_SECRET,
    deliver,
    make_plan,
    make_tenant,
    new_id,
    stripe_event,
    tenant_row,
)

URLS = {"success_url": "https://app.example.com/billing/done", "cancel_url": "https://app.example.com/billing"}


async def test_checkout_creates_the_customer_once_with_the_tenant_id(billing_api, catalog, fake_stripe):
    price = new_id("price")
    plan = await make_plan(catalog, price)
    tenant_id = await make_tenant(catalog)
    first = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/checkout", json={"plan": plan, **URLS})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["session_id"].startswith("cs_") and body["url"].startswith("https://")
    customers = fake_stripe.customers_of(str(tenant_id), API_KEY)
    assert len(customers) == 1
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customers[0]["id"]
    session = fake_stripe.state.sessions[body["session_id"]]
    assert (session["customer"], session["price"], session["client_reference_id"]) == (
        customers[0]["id"], price, str(tenant_id))
    second = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/checkout", json={"plan": plan, **URLS})
    assert second.status_code == 200 and second.json()["session_id"] != body["session_id"]
    assert len(fake_stripe.customers_of(str(tenant_id), API_KEY)) == 1
    portal = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/portal",
                                    json={"return_url": "https://app.example.com/"})
    assert portal.status_code == 200 and portal.json()["url"].startswith("https://billing.stripe.test/")
    assert len(fake_stripe.customers_of(str(tenant_id), API_KEY)) == 1


async def test_a_lost_answer_then_a_rerun_makes_one_customer(billing_api, catalog, fake_stripe):
    """Stripe made the customer but we never heard (every retry of the SDK lost too): the key was
    committed before the call, so the rerun sends the same key and gets the same customer."""
    plan = await make_plan(catalog, new_id("price"))
    tenant_id = await make_tenant(catalog)
    fake_stripe.drop_answers("/v1/customers", 3)  # the SDK's first try and its two retries
    lost = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/checkout", json={"plan": plan, **URLS})
    assert lost.status_code == 502 and lost.json()["code"] == "stripe_unavailable"
    assert API_KEY not in lost.text
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
    assert len(fake_stripe.customers_of(str(tenant_id), API_KEY)) == 1  # Stripe did make it
    rerun = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/checkout", json={"plan": plan, **URLS})
    assert rerun.status_code == 200, rerun.text
    customers = fake_stripe.customers_of(str(tenant_id), API_KEY)
    assert len(customers) == 1
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customers[0]["id"]
    key = await catalog.fetchval("SELECT key FROM billing_idempotency_keys WHERE purpose = $1", f"customer:{tenant_id}")
    calls = [s for s in fake_stripe.seen("/v1/customers") if s.idempotency_key == key]
    assert len(calls) == 4 and [c.replayed for c in calls] == [False, True, True, True]


async def test_without_an_api_key_checkout_and_portal_answer_503_and_webhooks_still_work(billing_settings, catalog,
                                                                                          billing_applier):
    settings = msgspec.structs.replace(billing_settings, stripe_api_key=None)
    plan = await make_plan(catalog, new_id("price"))
    tenant_id = await make_tenant(catalog)
    async with AsyncTestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {settings.admin_token}"
        checkout = await client.post(f"/v1/tenants/{tenant_id}/billing/checkout", json={"plan": plan, **URLS})
        portal = await client.post(f"/v1/tenants/{tenant_id}/billing/portal", json={"return_url": "https://a.example/"})
        for response in (checkout, portal):
            assert response.status_code == 503 and response.json()["code"] == "billing_not_configured"
            assert response.headers["content-type"].startswith("application/problem+json")
        event = stripe_event("charge.succeeded", {"id": new_id("ch")})
        assert (await deliver(client, event, secret=NEW_SECRET)).status_code == 200
    no_secret = msgspec.structs.replace(billing_settings, stripe_webhook_secret=None)
    async with AsyncTestClient(create_app(no_secret)) as client:
        response = await deliver(client, stripe_event("charge.succeeded", {"id": new_id("ch")}))
        assert response.status_code == 503 and response.json()["code"] == "webhook_not_configured"


async def test_checkout_refuses_what_it_cannot_sell(billing_api, catalog):
    tenant_id = await make_tenant(catalog)
    unpriced = await make_plan(catalog)
    cases = [
        (f"/v1/tenants/{uuid.uuid4()}/billing/checkout", {"plan": unpriced, **URLS}, 404, "tenant_not_found"),
        (f"/v1/tenants/{tenant_id}/billing/checkout", {"plan": "no_such_plan", **URLS}, 422, "unknown_plan"),
        (f"/v1/tenants/{tenant_id}/billing/checkout", {"plan": unpriced, **URLS}, 422, "plan_not_for_sale"),
        (f"/v1/tenants/{uuid.uuid4()}/billing/portal", {"return_url": "https://a.example/"}, 404, "tenant_not_found"),
    ]
    for path, body, status, code in cases:
        response = await billing_api.post(path, json=body)
        assert (response.status_code, response.json()["code"]) == (status, code), (path, body, response.text)


async def test_hostile_input_on_every_billing_route_is_a_4xx(billing_api, catalog):
    tenant_id = await make_tenant(catalog)
    checkout = f"/v1/tenants/{tenant_id}/billing/checkout"
    portal = f"/v1/tenants/{tenant_id}/billing/portal"
    json_bodies = [
        (checkout, {"plan": 1, **URLS}),
        (checkout, {"plan": "x" * 10_000, **URLS}),
        (checkout, {"plan": "basic\n", **URLS}),
        (checkout, {"plan": "basic", "success_url": "javascript:alert(1)", "cancel_url": URLS["cancel_url"]}),
        (checkout, {"plan": "basic", "success_url": "https://a.example/" + "x" * 5000, "cancel_url": URLS["cancel_url"]}),
        (checkout, {"plan": "basic", "success_url": "https://a.example/\u0000", "cancel_url": URLS["cancel_url"]}),
        (checkout, {"plan": "basic", **URLS, "extra": True}),
        (checkout, {"plan": "basic"}),
        (checkout, []),
        (checkout, {"plan": None, **URLS}),
        (portal, {"return_url": 12}),
        (portal, {"return_url": ["https://a.example/"]}),
        (portal, {}),
        ("/v1/tenants/" + "a" * 500 + "/billing/portal", {"return_url": "https://a.example/"}),
        ("/v1/tenants/a%00b/billing/portal", {"return_url": "https://a.example/"}),
    ]
    for path, body in json_bodies:
        response = await billing_api.post(path, json=body)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for path in (checkout, portal):
        for raw, content_type in ((b"{not json", "application/json"), (b"\xff\xfe", "application/json"),
                                  (b"[" * 10_000, "application/json"), (b"plan=basic", "application/x-www-form-urlencoded"),
                                  (b"{" + b'"a":1,' * 20_000 + b"}", "application/json")):
            response = await billing_api.post(path, content=raw, headers={"Content-Type": content_type})
            assert 400 <= response.status_code < 500, (path, raw[:20], response.text)
    for params in ({"state": "bogus"}, {"limit": "0"}, {"limit": str(10 ** 30)}, {"limit": "many"},
                   {"state": "applied\u0000"}):
        response = await billing_api.get("/v1/billing/events", params=params)
        assert 400 <= response.status_code < 500, (params, response.text)
    for event_id in ("x" * 1000, "evt_%00", "evt_' OR 1=1 --"):
        response = await billing_api.post(f"/v1/billing/events/{event_id}/replay")
        assert 400 <= response.status_code < 500, (event_id, response.text)


async def test_localstripe_delivers_its_own_signed_webhooks_to_the_api(billing_http, billing_api, fake_stripe):
    """localstripe signs with the secret it was given and posts to our URL over HTTP, as Stripe
    does; a customer.created is no event we act on, so it is recorded as ignored."""
    registered = fake_stripe.backend("POST", "/_config/webhooks/tenantplane", API_KEY, {
        "url": f"{billing_http.url}/v1/billing/stripe/webhook", "secret": NEW_SECRET})
    assert registered is not None
    customer = fake_stripe.backend("POST", "/v1/customers", API_KEY, {"name": "via localstripe"})
    for _ in range(100):  # localstripe waits a second before it delivers
        listed = (await billing_api.get("/v1/billing/events", params={"state": "ignored"})).json()["items"]
        mine = [i for i in listed if i["type"] == "customer.created"]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert mine, "localstripe's webhook did not arrive"
    assert customer["id"].startswith("cus_")


async def test_sigkill_between_the_call_and_its_answer_then_a_rerun_makes_one_customer(
        billing_api, billing_settings, catalog, fake_stripe):
    root = Path(__file__).resolve().parents[3]
    tenant_id = await make_tenant(catalog)
    # long enough to kill the process while the answer waits, short enough that the rerun (whose
    # same key waits at the fake for the first request to finish, as Stripe's 409 would) is quick
    fake_stripe.hold_answer("/v1/customers", 3)
    proc = subprocess.Popen([sys.executable, "-m", "tests.control_plane.billing.crash_client",
                             billing_settings.catalog_database_url, fake_stripe.url, str(tenant_id)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, start_new_session=True)
    try:
        for _ in range(300):  # until Stripe (the fake) has made the customer
            if fake_stripe.customers_of(str(tenant_id), API_KEY):
                break
            await asyncio.sleep(0.05)
        assert len(fake_stripe.customers_of(str(tenant_id), API_KEY)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None  # the answer was never recorded
    rerun = await billing_api.post(f"/v1/tenants/{tenant_id}/billing/portal", json={"return_url": "https://a.example/"})
    assert rerun.status_code == 200, rerun.text
    customers = fake_stripe.customers_of(str(tenant_id), API_KEY)
    assert len(customers) == 1
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customers[0]["id"]


async def test_concurrent_checkouts_for_a_new_tenant_make_one_customer(billing_api, catalog, fake_stripe):
    plan = await make_plan(catalog, new_id("price"))
    tenant_id = await make_tenant(catalog)
    answers = await asyncio.gather(*(billing_api.post(f"/v1/tenants/{tenant_id}/billing/checkout",
                                                      json={"plan": plan, **URLS}) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len(fake_stripe.customers_of(str(tenant_id), API_KEY)) == 1
