"""From a Stripe event to a catalog change, without I/O.

The service reads what the catalog knows (the tenant, the newest state seen of the subscription or
invoice the event is about) and hands it here; `decide` says what to write. Order safety lives in
the per-object facts: an event older than the last one applied to the same object changes
nothing, a deleted subscription never comes back, a paid invoice never fails again. The tenant's
billing status is then derived from the newest state of all its invoices (`derive_billing`), so it
is the same whatever order the events arrived in.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from control_plane.billing.errors import InvalidEvent

# Stripe ids are ASCII letters, digits and '_' after a prefix; anything else names nothing of ours.
EventId = Annotated[str, Meta(pattern=r"^evt_[A-Za-z0-9_]{1,250}$")]
Seconds = Annotated[int, Meta(ge=0, le=32503680000)]  # before year 3000: no datetime overflow

HANDLED = frozenset({
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
})
LIVE_SUBSCRIPTION = frozenset({"active", "trialing", "past_due", "unpaid", "incomplete"})


class EventData(msgspec.Struct):
    object: dict[str, Any]


class StripeEvent(msgspec.Struct, kw_only=True):
    id: EventId
    object: Literal["event"]
    type: Annotated[str, Meta(min_length=1, max_length=100)]
    created: Seconds
    data: EventData

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.created, dt.UTC)


def parse(payload: bytes) -> StripeEvent:
    """The event in a verified webhook body; 400 invalid_event for anything else."""
    try:
        return msgspec.json.decode(payload, type=StripeEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidEvent(f"the payload is not a Stripe event: {str(exc)[:200]}") from None


def from_dict(values: dict[str, Any]) -> StripeEvent:
    """An event listed through the API (events since a checkpoint), in the same shape."""
    try:
        return msgspec.convert(values, StripeEvent)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"not a Stripe event: {str(exc)[:200]}") from None


def _id(value: Any) -> str | None:
    """A Stripe reference: an id, or the object itself when expanded."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _ts(value: Any) -> dt.datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 32503680000:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """Who and what an event is about, as far as the payload says."""

    kind: Literal["checkout", "subscription", "invoice"]
    object_id: str | None  # the subscription or invoice whose order guards this event
    customer_id: str | None
    tenant_hint: uuid.UUID | None  # only checkout names a tenant (client_reference_id / metadata)


def subject(event: StripeEvent) -> Subject | None:
    """None for an event type we do not act on (recorded as ignored)."""
    obj = event.data.object
    customer = _id(obj.get("customer"))
    if event.type == "checkout.session.completed":
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        hint = obj.get("client_reference_id") or metadata.get("tenant_id")
        try:
            tenant = uuid.UUID(hint) if isinstance(hint, str) and len(hint) <= 64 else None
        except ValueError:
            tenant = None
        return Subject(kind="checkout", object_id=_id(obj.get("subscription")), customer_id=customer,
                       tenant_hint=tenant)
    if event.type.startswith("customer.subscription.") and event.type in HANDLED:
        return Subject(kind="subscription", object_id=_id(obj.get("id")), customer_id=customer, tenant_hint=None)
    if event.type in ("invoice.paid", "invoice.payment_failed"):
        return Subject(kind="invoice", object_id=_id(obj.get("id")), customer_id=customer, tenant_hint=None)
    return None


def tenants_named(event: StripeEvent) -> list[uuid.UUID]:
    """The tenant ids an event's object carries (our customers' and subscriptions' metadata, a
    checkout's client_reference_id), whatever its type: an event of an erased tenant arriving after
    its erasure (Stripe's own `customer.deleted`, say) is found by them."""
    obj = event.data.object
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    named = []
    for hint in (metadata.get("tenant_id"), obj.get("client_reference_id")):
        if isinstance(hint, str) and len(hint) <= 64:
            try:
                named.append(uuid.UUID(hint))
            except ValueError:
                continue
    return named


class TenantFacts(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    status: str
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    plan: str | None


class ObjectFacts(msgspec.Struct, frozen=True, kw_only=True):
    last_event_created: dt.datetime
    status: str
    terminal: bool
    failed_at: dt.datetime | None = None


class ObjectUpdate(msgspec.Struct, frozen=True, kw_only=True):
    object_id: str
    kind: Literal["subscription", "invoice"]
    status: str
    terminal: bool
    price_id: str | None = None
    period_end: dt.datetime | None = None
    failed_at: dt.datetime | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["applied", "parked", "ignored"]
    reason: str | None = None
    tenant_id: uuid.UUID | None = None
    tenant_changes: dict[str, Any] = {}  # column -> value on the tenant row
    object_update: ObjectUpdate | None = None
    recompute_billing: bool = False  # derive billing status and paid_until from the invoices
    dunning: bool = False  # record a dunning notice (outbox)
    suspend: bool = False  # no free plan to fall back to: the tenant is suspended


def _parked(reason: str, tenant: TenantFacts | None = None) -> Decision:
    return Decision(state="parked", reason=reason, tenant_id=tenant.id if tenant else None)


def _stale(tenant: TenantFacts) -> Decision:
    return Decision(state="ignored", reason="stale", tenant_id=tenant.id)


def _older(event: StripeEvent, last: ObjectFacts | None) -> bool:
    # Stripe's `created` has one-second resolution: an event of the same second is not older
    return last is not None and event.created_at < last.last_event_created


def price_of(subscription: dict[str, Any]) -> tuple[str | None, dt.datetime | None]:
    """The subscription's (first) price and the end of its current period. Recent API versions
    keep the period on the items, older ones on the subscription."""
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    price = _id(first.get("price")) or _id(first.get("plan")) or _id(subscription.get("plan"))
    period_end = _ts(first.get("current_period_end")) or _ts(subscription.get("current_period_end"))
    return price, period_end


def _invoice_period_end(invoice: dict[str, Any]) -> dt.datetime | None:
    """The end of what the invoice pays for: its lines' periods (a subscription invoice's own
    period_end is the start of the period it bills)."""
    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else None
    ends = [_ts(line["period"].get("end")) for line in data or ()
            if isinstance(line, dict) and isinstance(line.get("period"), dict)]
    ends = [end for end in ends if end is not None]
    return max(ends) if ends else _ts(invoice.get("period_end"))


def decide(event: StripeEvent, about: Subject, tenant: TenantFacts | None, last: ObjectFacts | None,
           *, price_plans: dict[str, str], free_plan: str | None) -> Decision:
    """What applying `event` changes. `tenant` is the one the service found for it (by the
    checkout's tenant reference, else by customer id), `last` the newest facts of its object."""
    if tenant is None:
        return _parked("unknown_tenant" if about.kind == "checkout" else "unknown_customer")
    if tenant.status in ("deleting", "deleted"):  # its subscription is being cancelled: nothing applies
        return _parked("tenant_deleted", tenant)
    obj = event.data.object
    if about.kind == "checkout":
        return _checkout(about, tenant, last)
    if about.object_id is None:
        return _parked("no_object_id", tenant)
    if about.kind == "subscription":
        return _subscription(event, about, tenant, last, obj, price_plans, free_plan)
    return _invoice(event, about, tenant, last, obj)


def _checkout(about: Subject, tenant: TenantFacts, last: ObjectFacts | None) -> Decision:
    if about.customer_id is None:
        return _parked("no_customer", tenant)
    if tenant.stripe_customer_id not in (None, about.customer_id):
        return _parked("customer_mismatch", tenant)  # never re-point a tenant at another customer
    changes: dict[str, Any] = {"stripe_customer_id": about.customer_id}
    # a subscription already seen deleted (events shuffled) is not made the tenant's again
    if about.object_id is not None and not (last is not None and last.terminal):
        changes["stripe_subscription_id"] = about.object_id
    return Decision(state="applied", tenant_id=tenant.id, tenant_changes=changes, recompute_billing=True)


def _subscription(event: StripeEvent, about: Subject, tenant: TenantFacts, last: ObjectFacts | None,
                  obj: dict[str, Any], price_plans: dict[str, str], free_plan: str | None) -> Decision:
    deleted = event.type == "customer.subscription.deleted"
    if _older(event, last) or (last is not None and last.terminal):
        return _stale(tenant)
    assert about.object_id is not None
    price, period_end = price_of(obj)
    status = "canceled" if deleted else str(obj.get("status") or "unknown")[:32]
    update = ObjectUpdate(object_id=about.object_id, kind="subscription", status=status, terminal=deleted,
                          price_id=price, period_end=period_end)
    current = tenant.stripe_subscription_id
    changes: dict[str, Any] = {}
    suspend = False
    if deleted:
        if current in (None, about.object_id):
            changes["stripe_subscription_id"] = None
            if free_plan:
                changes["plan"] = free_plan
            else:
                suspend = True
    elif current == about.object_id or (current is None and status in LIVE_SUBSCRIPTION):
        changes["stripe_subscription_id"] = about.object_id
        plan = price_plans.get(price) if price else None
        if plan is not None:
            changes["plan"] = plan
    reason = None if changes or suspend else "not_the_tenants_subscription"
    return Decision(state="applied", reason=reason, tenant_id=tenant.id, tenant_changes=changes,
                    object_update=update, suspend=suspend)


def _invoice(event: StripeEvent, about: Subject, tenant: TenantFacts, last: ObjectFacts | None,
             obj: dict[str, Any]) -> Decision:
    paid = event.type == "invoice.paid"
    if _older(event, last) or (not paid and last is not None and last.terminal):
        return _stale(tenant)
    assert about.object_id is not None
    failed_at = None if paid else (last.failed_at if last and last.failed_at else event.created_at)
    update = ObjectUpdate(object_id=about.object_id, kind="invoice", status="paid" if paid else "failed",
                          terminal=paid, period_end=_invoice_period_end(obj), failed_at=failed_at)
    return Decision(state="applied", tenant_id=tenant.id, object_update=update, recompute_billing=True,
                    dunning=not paid)


class InvoiceFacts(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # paid | failed
    period_end: dt.datetime | None
    failed_at: dt.datetime | None


class BillingState(msgspec.Struct, frozen=True, kw_only=True):
    billing_status: Literal["ok", "past_due"]
    paid_until: dt.datetime | None
    past_due_since: dt.datetime | None


def derive_billing(invoices: list[InvoiceFacts], paid_until: dt.datetime | None) -> BillingState:
    """paid_until is the end of the latest paid period (never earlier than before); the tenant is
    past due while a failed invoice covers time beyond it, since the first such failure."""
    for invoice in invoices:
        if invoice.status == "paid" and invoice.period_end is not None:
            paid_until = invoice.period_end if paid_until is None else max(paid_until, invoice.period_end)
    unpaid = [i for i in invoices if i.status == "failed"
              and (paid_until is None or i.period_end is None or i.period_end > paid_until)]
    if not unpaid:
        return BillingState(billing_status="ok", paid_until=paid_until, past_due_since=None)
    since = min((i.failed_at for i in unpaid if i.failed_at is not None), default=None)
    return BillingState(billing_status="past_due", paid_until=paid_until, past_due_since=since)


def effect(decision: Decision, billing: BillingState | None) -> dict[str, Any]:
    """What the audit row and the event log say was done."""
    out: dict[str, Any] = {}
    if decision.reason:
        out["reason"] = decision.reason
    if decision.tenant_changes:
        out["tenant"] = dict(decision.tenant_changes)
    if decision.object_update is not None:
        out["object"] = {"id": decision.object_update.object_id, "status": decision.object_update.status}
    if billing is not None:
        out["billing"] = {"billing_status": billing.billing_status,
                          "paid_until": billing.paid_until.isoformat() if billing.paid_until else None,
                          "past_due_since": billing.past_due_since.isoformat() if billing.past_due_since else None}
    if decision.dunning:
        out["dunning"] = True
    if decision.suspend:
        out["suspend"] = True
    return out
