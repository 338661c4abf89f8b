"""The Stripe half of an erasure (what the workers are handed), with the real SDK against the fake
Stripe API: the subscription cancelled, then the customer deleted, each with its idempotency key
committed first; an answer lost after Stripe did the work is a rerun that finds it done."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from control_plane.billing.customer_erasure import CustomerErasure
from control_plane.billing.errors import StripeUnavailable
from control_plane.settings import Settings
from tests.control_plane.billing.conftest import API_KEY, make_tenant, new_id, tenant_row
from tests.control_plane.billing.test_sync import _subscribe


@pytest.fixture
async def eraser(billing_settings: Settings) -> AsyncIterator[CustomerErasure]:
    erasure = CustomerErasure(billing_settings)
    try:
        yield erasure
    finally:
        await erasure.close()


def _customer(fake_stripe) -> str:
    return fake_stripe.backend("POST", "/v1/customers", API_KEY, {"name": "Leaving"})["id"]


async def _keys(catalog, *purposes: str) -> list[tuple[str, bool]]:
    rows = await catalog.fetch("SELECT purpose, completed_at IS NOT NULL AS done FROM billing_idempotency_keys "
                               "WHERE purpose = ANY($1) ORDER BY purpose", list(purposes))
    return [(r["purpose"], r["done"]) for r in rows]


async def test_the_subscription_is_cancelled_then_the_customer_deleted(eraser, catalog, fake_stripe):
    customer = _customer(fake_stripe)
    sub = _subscribe(fake_stripe, customer, new_id("price"))
    tenant_id = await make_tenant(catalog, customer=customer, status="deleted")
    await catalog.execute("UPDATE tenants SET stripe_subscription_id = $2 WHERE id = $1", tenant_id, sub)

    assert await eraser.erase_customer(tenant_id) == {"subscription": "canceled", "customer": "deleted"}
    assert fake_stripe.backend("GET", f"/v1/subscriptions/{sub}", API_KEY)["status"] == "canceled"
    with pytest.raises(AssertionError, match="404"):
        fake_stripe.backend("GET", f"/v1/customers/{customer}", API_KEY)
    row = await tenant_row(catalog, tenant_id)
    assert (row["stripe_customer_id"], row["stripe_subscription_id"]) == (None, None)
    assert await _keys(catalog, f"cancel:{sub}", f"delete_customer:{customer}") == [
        (f"cancel:{sub}", True), (f"delete_customer:{customer}", True)]
    actions = await catalog.fetch("SELECT action, actor FROM audit_log WHERE target_id = $1 ORDER BY id",
                                  str(tenant_id))
    assert [(a["action"], a["actor"]) for a in actions] == [
        ("billing.subscription_cancel", "erasure"), ("billing.customer_delete", "erasure")]
    # asked again (a rerun of the step): nothing left to do, nothing sent
    sent = len(fake_stripe.state.seen)
    assert await eraser.erase_customer(tenant_id) == {"subscription": None, "customer": None}
    assert len(fake_stripe.state.seen) == sent


async def test_a_lost_answer_leaves_the_key_open_and_the_rerun_finds_the_customer_gone(eraser, catalog, fake_stripe):
    customer = _customer(fake_stripe)
    tenant_id = await make_tenant(catalog, customer=customer, status="deleted")
    fake_stripe.drop_answers(f"/v1/customers/{customer}", 3)  # the SDK's first try and its two retries
    with pytest.raises(StripeUnavailable) as lost:
        await eraser.erase_customer(tenant_id)
    assert API_KEY not in str(lost.value)
    # Stripe deleted it; we never heard: the customer is still ours and the key still open
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer
    assert await _keys(catalog, f"delete_customer:{customer}") == [(f"delete_customer:{customer}", False)]

    assert await eraser.erase_customer(tenant_id) == {"subscription": None, "customer": "missing"}
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
    assert await _keys(catalog, f"delete_customer:{customer}") == [(f"delete_customer:{customer}", True)]


async def test_a_tenant_without_stripe_ids_needs_no_call(eraser, catalog, fake_stripe):
    tenant_id = await make_tenant(catalog, status="deleted")
    sent = len(fake_stripe.state.seen)
    assert await eraser.erase_customer(tenant_id) == {"subscription": None, "customer": None}
    assert len(fake_stripe.state.seen) == sent
