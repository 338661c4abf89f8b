"""Deleting a tenant cancels its Stripe subscription (at localstripe, with an idempotency key, once)
and parks every later event for it; `tenantctl billing sync` runs the same catch-up as the route,
from the command line."""

from __future__ import annotations

import asyncio
import uuid

from tests.control_plane.billing.conftest import (
    API_KEY,
    deliver,
    make_plan,
    make_tenant,
    new_id,
    stripe_event,
    subscription,
    tenant_row,
)
from tests.control_plane.billing.test_sync import _subscribe


async def _eventually(predicate, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not within the time")


async def test_deleting_a_tenant_cancels_its_subscription_and_parks_later_events(billing_api, catalog, fake_stripe):
    price = new_id("price")
    await make_plan(catalog, price)
    tenant_id = await make_tenant(catalog)
    assert (await billing_api.post(f"/v1/tenants/{tenant_id}/billing/portal",
                                   json={"return_url": "https://app.example.com/"})).status_code == 200
    customer = (await tenant_row(catalog, tenant_id))["stripe_customer_id"]
    sub = _subscribe(fake_stripe, customer, price)
    await catalog.execute("UPDATE tenants SET stripe_subscription_id = $2 WHERE id = $1", tenant_id, sub)

    assert (await billing_api.delete(f"/v1/tenants/{tenant_id}")).status_code == 202

    async def cancelled() -> bool:
        return (await tenant_row(catalog, tenant_id))["stripe_subscription_id"] is None
    await _eventually(cancelled)
    assert fake_stripe.backend("GET", f"/v1/subscriptions/{sub}", API_KEY)["status"] == "canceled"
    key = await catalog.fetchrow("SELECT key, completed_at FROM billing_idempotency_keys WHERE purpose = $1",
                                 f"cancel:{sub}")
    assert key["completed_at"] is not None
    # the key goes with the call; a DELETE is idempotent at Stripe by itself (a second one is a 404,
    # which cancel_subscription takes as done)
    cancels = [s for s in fake_stripe.seen(f"/v1/subscriptions/{sub}") if s.method == "DELETE"]
    assert len(cancels) == 1
    assert await catalog.fetchval("SELECT count(*) FROM audit_log WHERE action = 'billing.subscription_cancel' "
                                  "AND target_id = $1", str(tenant_id)) == 1

    # Stripe's word that the subscription ended, and anything after it: parked, nothing applied
    for type_ in ("customer.subscription.deleted", "customer.subscription.updated"):
        answer = await deliver(billing_api, stripe_event(type_, subscription(sub, customer, price, status="canceled")))
        assert answer.json()["state"] == "parked", answer.text
    events = (await billing_api.get("/v1/billing/events?state=parked")).json()["items"]
    mine = [e for e in events if e["tenant_id"] == str(tenant_id)]
    assert len(mine) == 2 and all(e["effect"]["reason"] == "tenant_deleted" for e in mine)
    assert (await tenant_row(catalog, tenant_id))["status"] == "deleting"

    # the loop's next round (and a sync) finds nothing owed
    assert (await billing_api.post("/v1/billing/sync")).json()["subscriptions_cancelled"] == 0


async def test_tenantctl_billing_sync_reports_what_it_applied(billing_http, billing_api):
    """`tenantctl billing sync` asks the API (which holds the Stripe key): the CLI needs no Stripe
    setting, and a key without the `billing` scope is refused."""
    from tests.control_plane.cli_api import operator_env, tenantctl

    settings = billing_http.settings
    env = operator_env(billing_http.url, settings.admin_token)
    done = await asyncio.to_thread(tenantctl, "billing", "sync", env=env)
    assert done.returncode == 0, done.stderr
    assert "listed" in done.stdout and "checkpoint:" in done.stdout
    assert settings.stripe_api_key not in done.stdout + done.stderr
    made = await billing_api.post("/v1/admin-keys", json={"name": f"reader-{uuid.uuid4().hex[:8]}",
                                                         "scopes": ["tenants:read"]})
    refused = await asyncio.to_thread(tenantctl, "billing", "sync", env=operator_env(billing_http.url,
                                                                                      made.json()["token"]))
    assert refused.returncode == 1 and "insufficient_scope" in refused.stderr
