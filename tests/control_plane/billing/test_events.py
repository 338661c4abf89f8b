"""The pure mapping from Stripe events to catalog changes (no servers)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.billing import events
from control_plane.billing.errors import InvalidEvent

T0 = 1_760_000_000


def _event(type_: str, obj: dict, created: int = T0) -> events.StripeEvent:
    return events.from_dict({"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": type_,
                             "created": created, "data": {"object": obj}})


def _tenant(**kw) -> events.TenantFacts:
    values = dict(id=uuid.uuid4(), status="active", stripe_customer_id="cus_1", stripe_subscription_id=None, plan=None)
    return events.TenantFacts(**{**values, **kw})


def _decide(event, tenant, last=None, prices=None, free_plan=None):
    about = events.subject(event)
    assert about is not None
    return events.decide(event, about, tenant, last, price_plans=prices or {}, free_plan=free_plan)


def test_parse_accepts_an_event_and_refuses_anything_else():
    body = {"id": "evt_1", "object": "event", "type": "invoice.paid", "created": T0, "data": {"object": {"id": "in_1"}}}
    assert events.parse(json.dumps(body).encode()).type == "invoice.paid"
    for bad in (b"", b"null", b"{}", json.dumps({**body, "object": "charge"}).encode(),
                json.dumps({**body, "created": -1}).encode(), json.dumps({**body, "data": []}).encode()):
        with pytest.raises(InvalidEvent):
            events.parse(bad)


def test_an_unknown_customer_or_a_deleted_tenant_is_parked():
    event = _event("invoice.paid", {"id": "in_1", "customer": "cus_x"})
    assert _decide(event, None).reason == "unknown_customer"
    assert _decide(event, _tenant(status="deleted")).state == "parked"
    checkout = _event("checkout.session.completed", {"id": "cs_1", "customer": "cus_1", "client_reference_id": "nope"})
    assert events.subject(checkout).tenant_hint is None
    assert _decide(checkout, None).reason == "unknown_tenant"


def test_an_unhandled_type_has_no_subject():
    assert events.subject(_event("charge.refunded", {"id": "ch_1"})) is None


def test_the_subscription_price_picks_the_plan_and_a_deleted_one_falls_to_the_free_plan():
    sub = {"id": "sub_1", "customer": "cus_1", "status": "active",
           "items": {"data": [{"price": {"id": "price_pro"}, "current_period_end": T0 + 100}]}}
    decision = _decide(_event("customer.subscription.updated", sub), _tenant(), prices={"price_pro": "pro"})
    assert decision.tenant_changes == {"stripe_subscription_id": "sub_1", "plan": "pro"}
    assert decision.object_update.period_end == dt.datetime.fromtimestamp(T0 + 100, dt.UTC)
    deleted = _decide(_event("customer.subscription.deleted", sub), _tenant(stripe_subscription_id="sub_1"),
                      free_plan="free")
    assert deleted.tenant_changes == {"stripe_subscription_id": None, "plan": "free"} and not deleted.suspend
    suspended = _decide(_event("customer.subscription.deleted", sub), _tenant(stripe_subscription_id="sub_1"))
    assert suspended.suspend
    other = _decide(_event("customer.subscription.deleted", sub), _tenant(stripe_subscription_id="sub_2"))
    assert other.tenant_changes == {} and not other.suspend  # not the tenant's subscription


def test_older_events_and_events_after_a_terminal_state_are_stale():
    sub = {"id": "sub_1", "customer": "cus_1", "status": "active"}
    last = events.ObjectFacts(last_event_created=dt.datetime.fromtimestamp(T0, dt.UTC), status="active", terminal=False)
    assert _decide(_event("customer.subscription.updated", sub, T0 - 1), _tenant(), last).reason == "stale"
    assert _decide(_event("customer.subscription.updated", sub, T0), _tenant(), last).state == "applied"
    gone = events.ObjectFacts(last_event_created=dt.datetime.fromtimestamp(T0, dt.UTC), status="canceled", terminal=True)
    assert _decide(_event("customer.subscription.updated", sub, T0 + 5), _tenant(), gone).reason == "stale"
    paid = events.ObjectFacts(last_event_created=dt.datetime.fromtimestamp(T0, dt.UTC), status="paid", terminal=True)
    failed = _event("invoice.payment_failed", {"id": "in_1", "customer": "cus_1"}, T0 + 5)
    assert _decide(failed, _tenant(), paid).reason == "stale"


def test_a_checkout_never_repoints_a_tenant_at_another_customer():
    tenant = _tenant(stripe_customer_id="cus_mine")
    checkout = _event("checkout.session.completed", {"id": "cs_1", "customer": "cus_other", "subscription": "sub_1",
                                                     "client_reference_id": str(tenant.id)})
    assert _decide(checkout, tenant).reason == "customer_mismatch"


_invoices = st.lists(st.tuples(st.sampled_from(["paid", "failed"]), st.integers(0, 100), st.integers(0, 100)),
                     max_size=8)


@settings(max_examples=200, deadline=None)
@given(_invoices, st.randoms())
def test_derived_billing_does_not_depend_on_the_order_of_the_invoices(rows, rng):
    facts = [events.InvoiceFacts(status=s, period_end=dt.datetime.fromtimestamp(T0 + end * 86400, dt.UTC),
                                 failed_at=None if s == "paid" else dt.datetime.fromtimestamp(T0 + at, dt.UTC))
             for s, end, at in rows]
    shuffled = list(facts)
    rng.shuffle(shuffled)
    first, second = events.derive_billing(facts, None), events.derive_billing(shuffled, None)
    assert first == second
    paid_ends = [f.period_end for f in facts if f.status == "paid"]
    assert first.paid_until == (max(paid_ends) if paid_ends else None)
    assert (first.billing_status == "past_due") == any(
        f.status == "failed" and (first.paid_until is None or f.period_end > first.paid_until) for f in facts)


def test_paid_until_never_moves_back():
    later = dt.datetime.fromtimestamp(T0 + 90 * 86400, dt.UTC)
    state = events.derive_billing([events.InvoiceFacts(status="paid", period_end=later - dt.timedelta(days=60),
                                                       failed_at=None)], later)
    assert state.paid_until == later
