"""Catching up from Stripe's event list (localstripe's own events): what the webhooks missed is
applied once, and a second run finds nothing new."""

from __future__ import annotations

import uuid

from tests.control_plane.billing.conftest import API_KEY, make_plan, make_tenant, tenant_row

URLS = {"success_url": "https://app.example.com/done", "cancel_url": "https://app.example.com/"}


def _subscribe(fake_stripe, customer: str, plan_id: str) -> str:
    """A subscription made at localstripe the way a customer would (product, plan, card)."""
    product = fake_stripe.backend("POST", "/v1/products", API_KEY, {"name": "Pro", "type": "service"})
    fake_stripe.backend("POST", "/v1/plans", API_KEY, {"id": plan_id, "product": product["id"], "amount": "1000",
                                                        "currency": "usd", "interval": "month"})
    card = fake_stripe.backend("POST", "/v1/payment_methods", API_KEY, {
        "type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12", "card[exp_year]": "2030",
        "card[cvc]": "123"})
    fake_stripe.backend("POST", f"/v1/payment_methods/{card['id']}/attach", API_KEY, {"customer": customer})
    fake_stripe.backend("POST", f"/v1/customers/{customer}", API_KEY,
                        {"invoice_settings[default_payment_method]": card["id"]})
    return fake_stripe.backend("POST", "/v1/subscriptions", API_KEY,
                               {"customer": customer, "items[0][plan]": plan_id})["id"]


async def test_sync_applies_the_events_it_lists_once(billing_api, catalog, fake_stripe):
    price = f"price_{uuid.uuid4().hex[:12]}"
    plan = await make_plan(catalog, price)
    tenant_id = await make_tenant(catalog)
    assert (await billing_api.post(f"/v1/tenants/{tenant_id}/billing/portal",
                                   json={"return_url": "https://app.example.com/"})).status_code == 200
    customer = (await tenant_row(catalog, tenant_id))["stripe_customer_id"]
    subscription = _subscribe(fake_stripe, customer, price)

    first = await billing_api.post("/v1/billing/sync")
    assert first.status_code == 200, first.text
    assert first.json()["listed"] >= 1 and first.json()["checkpoint"] is not None
    row = await tenant_row(catalog, tenant_id)
    assert (row["stripe_subscription_id"], row["plan"]) == (subscription, plan)

    fake_stripe.backend("DELETE", f"/v1/subscriptions/{subscription}", API_KEY)
    second = await billing_api.post("/v1/billing/sync")
    assert second.status_code == 200, second.text
    row = await tenant_row(catalog, tenant_id)
    assert row["stripe_subscription_id"] is None and row["status"] == "suspended"
    third = (await billing_api.post("/v1/billing/sync")).json()
    assert third["recorded"] == 0 and third["duplicates"] == third["listed"]
    types = {r["type"] for r in await catalog.fetch(
        "SELECT type FROM billing_events WHERE tenant_id = $1", tenant_id)}
    assert {"customer.subscription.created", "customer.subscription.deleted"} <= types
