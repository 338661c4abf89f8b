"""Events delivered out of order end in the newest truth: an event older than the last one applied
to the same subscription or invoice changes nothing, and billing status follows the invoices."""

from __future__ import annotations

import datetime as dt
import random
import time

from tests.control_plane.billing.conftest import (
    checkout_completed,
    deliver,
    invoice,
    make_plan,
    make_tenant,
    new_id,
    stripe_event,
    subscription,
    tenant_row,
)

DAY = 86400


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def test_an_update_before_the_checkout_and_an_older_update_after_it(billing_api, catalog):
    basic_price, pro_price = new_id("price"), new_id("price")
    basic, pro = await make_plan(catalog, basic_price), await make_plan(catalog, pro_price)
    customer, sub = new_id("cus"), new_id("sub")
    tenant_id = await make_tenant(catalog, customer=customer)
    t0 = int(time.time()) - 100
    created = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, sub), created=t0)
    to_basic = stripe_event("customer.subscription.updated", subscription(sub, customer, basic_price), created=t0 + 10)
    to_pro = stripe_event("customer.subscription.updated", subscription(sub, customer, pro_price), created=t0 + 20)
    for event in (to_pro, created, to_basic):  # the newest update first, the older one last
        assert (await deliver(billing_api, event)).status_code == 200
    row = await tenant_row(catalog, tenant_id)
    assert (row["plan"], row["stripe_subscription_id"]) == (pro, sub)
    stale = (await billing_api.get("/v1/billing/events", params={"state": "ignored"})).json()["items"]
    assert {"id": to_basic["id"], "reason": "stale"} in [{"id": i["id"], "reason": i["effect"].get("reason")}
                                                          for i in stale]
    assert basic != pro


async def test_a_stale_update_after_the_deletion_does_not_bring_the_subscription_back(billing_api, catalog):
    price = new_id("price")
    plan = await make_plan(catalog, price)
    customer, sub = new_id("cus"), new_id("sub")
    tenant_id = await make_tenant(catalog, customer=customer)
    t0 = int(time.time()) - 100
    events = [
        stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, sub), created=t0),
        stripe_event("customer.subscription.updated", subscription(sub, customer, price), created=t0 + 1),
        stripe_event("customer.subscription.deleted", subscription(sub, customer, price, status="canceled"),
                     created=t0 + 50),
        stripe_event("customer.subscription.updated", subscription(sub, customer, price), created=t0 + 5),
        # the same second as the deletion: a deleted subscription never comes back
        stripe_event("customer.subscription.updated", subscription(sub, customer, price), created=t0 + 50),
    ]
    for event in events:
        assert (await deliver(billing_api, event)).status_code == 200
    row = await tenant_row(catalog, tenant_id)
    # no BILLING_FREE_PLAN in these settings: the tenant is suspended, its plan left as it was
    assert row["stripe_subscription_id"] is None and row["status"] == "suspended" and row["plan"] == plan
    kinds = await catalog.fetch("SELECT kind, state FROM operations WHERE tenant_id = $1", tenant_id)
    assert [(r["kind"], r["state"]) for r in kinds] == [("suspend_tenant", "succeeded")]


async def test_a_paid_newer_invoice_wins_over_a_failed_older_one_in_any_order(billing_api, catalog):
    now = int(time.time())
    for order in ("paid first", "failed first"):
        customer = new_id("cus")
        tenant_id = await make_tenant(catalog, customer=customer)
        older = invoice(new_id("in"), customer, period_end=now + 10 * DAY)
        newer = invoice(new_id("in"), customer, period_end=now + 40 * DAY)
        failed = stripe_event("invoice.payment_failed", older, created=now - 60)
        paid = stripe_event("invoice.paid", newer, created=now - 30)
        for event in ((paid, failed) if order == "paid first" else (failed, paid)):
            assert (await deliver(billing_api, event)).status_code == 200
        row = await tenant_row(catalog, tenant_id)
        assert row["billing_status"] == "ok", order
        assert row["paid_until"] == _at(now + 40 * DAY) and row["past_due_since"] is None, order


async def test_a_failed_newer_invoice_stays_past_due_whatever_the_order(billing_api, catalog):
    now = int(time.time())
    for order in ("paid first", "failed first"):
        customer = new_id("cus")
        tenant_id = await make_tenant(catalog, customer=customer)
        older = invoice(new_id("in"), customer, period_end=now + 10 * DAY)
        newer = invoice(new_id("in"), customer, period_end=now + 40 * DAY)
        paid = stripe_event("invoice.paid", older, created=now - 60)
        failed = stripe_event("invoice.payment_failed", newer, created=now - 30)
        for event in ((paid, failed) if order == "paid first" else (failed, paid)):
            assert (await deliver(billing_api, event)).status_code == 200
        row = await tenant_row(catalog, tenant_id)
        assert row["billing_status"] == "past_due", order
        assert row["paid_until"] == _at(now + 10 * DAY) and row["past_due_since"] == _at(now - 30), order
        notices = await catalog.fetch("SELECT kind FROM dunning_outbox WHERE tenant_id = $1", tenant_id)
        assert [n["kind"] for n in notices] == ["payment_failed"], order


async def test_paying_the_failed_invoice_clears_past_due_and_a_late_failure_of_it_changes_nothing(billing_api, catalog):
    now = int(time.time())
    customer = new_id("cus")
    tenant_id = await make_tenant(catalog, customer=customer)
    inv = invoice(new_id("in"), customer, period_end=now + 30 * DAY)
    first_failure = stripe_event("invoice.payment_failed", inv, created=now - 90)
    paid = stripe_event("invoice.paid", inv, created=now - 30)
    retry_failure = stripe_event("invoice.payment_failed", inv, created=now - 60)  # arrives last, is older
    same_second_failure = stripe_event("invoice.payment_failed", inv, created=now - 30)
    for event in (first_failure, paid, retry_failure, same_second_failure):
        assert (await deliver(billing_api, event)).status_code == 200
    row = await tenant_row(catalog, tenant_id)
    assert (row["billing_status"], row["past_due_since"], row["paid_until"]) == ("ok", None, _at(now + 30 * DAY))


async def test_shuffled_histories_end_in_the_same_state(billing_api, catalog):
    """One history, four random orders: every tenant ends as the history's last word says."""
    price_a, price_b = new_id("price"), new_id("price")
    await make_plan(catalog, price_a)
    plan_b = await make_plan(catalog, price_b)
    now = int(time.time())
    rng = random.Random(11)
    for _ in range(4):
        customer, sub = new_id("cus"), new_id("sub")
        tenant_id = await make_tenant(catalog, customer=customer)
        inv1 = invoice(new_id("in"), customer, period_end=now + 10 * DAY, subscription_id=sub)
        inv2 = invoice(new_id("in"), customer, period_end=now + 40 * DAY, subscription_id=sub)
        history = [
            stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, sub), created=now - 100),
            stripe_event("customer.subscription.updated", subscription(sub, customer, price_a), created=now - 99),
            stripe_event("invoice.paid", inv1, created=now - 98),
            stripe_event("invoice.payment_failed", inv2, created=now - 50),
            stripe_event("customer.subscription.updated", subscription(sub, customer, price_b), created=now - 40),
            stripe_event("invoice.paid", inv2, created=now - 20),
        ]
        rng.shuffle(history)
        for event in history:
            assert (await deliver(billing_api, event)).status_code == 200
        row = await tenant_row(catalog, tenant_id)
        assert (row["plan"], row["billing_status"], row["paid_until"], row["stripe_subscription_id"]) == (
            plan_b, "ok", _at(now + 40 * DAY), sub), [e["type"] for e in history]
