"""Stripe events: recorded exactly once, applied once, listed and replayed.

The event row is inserted with ON CONFLICT on the Stripe event id: a concurrent delivery of the
same event waits on that row and then sees a duplicate. Applying is separate (`apply_next`, run by
the applier round): the row is claimed FOR UPDATE SKIP LOCKED and leaves `received` in the
transaction that applies it, so an event has one effect however often and however concurrently
it arrives, and one whose apply was interrupted is applied by the next round. The tenant and the
object the event is about are locked before `events.decide` looks at them, so two events for one
tenant apply one after the other.

Several workers run the applier; one event is applied at a time fleet-wide (a transaction-level
advisory lock, `locks.BILLING_APPLIER`), so events apply in the order they were created as with a
single applier. Row locks alone would not do: an event found by its customer id does not wait for
the uncommitted `checkout.session.completed` that sets that id; it would see no tenant and park.
A worker that finds the lock taken leaves the round to the holder, which drains every event
(including those recorded meanwhile: the NOTIFY wakes it too); the lock goes with a dead worker's
connection.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from typing import Any

import msgspec
from sqlalchemy import any_, case, func, literal, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import locks
from control_plane.billing import events
from control_plane.billing.errors import (
    BillingEventNotFound,
    EventNotReplayable,
    InvalidEvent,
    WebhookNotConfigured,
)
from control_plane.billing.recorder import EventRecorder
from control_plane.billing.schemas import BillingEventList, BillingEventOut, WebhookAnswer
from control_plane.billing.stripe_client import verify_webhook
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import BillingEvent, BillingObject, DunningNotice, Plan, Tenant, TenantErasure
from control_plane.services import audit, notify
from control_plane.settings import Settings
from provisioning import queue
from provisioning.dunning import BILLING_SUSPENSIONS

log = logging.getLogger("tenantplane.billing")

ACTOR = "stripe"
REPLAYABLE = ("parked", "failed")
ROUTED = ("plan", "billing_status", "billing_grace_until", "status")  # what routers gate on
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_TRY_TURN = text("SELECT pg_try_advisory_xact_lock(:key, 0)").bindparams(key=locks.BILLING_APPLIER)
_WAIT_TURN = text("SELECT pg_advisory_xact_lock(:key, 0)").bindparams(key=locks.BILLING_APPLIER)
_ERASED_STUB = literal_column("jsonb_build_object('id', billing_events.id, 'type', billing_events.type, 'erased', true)")


def webhook_secrets(settings: Settings) -> list[str]:
    return [s.strip() for s in (settings.stripe_webhook_secret or "").split(",") if s.strip()]


def _out(row: BillingEvent) -> BillingEventOut:
    return BillingEventOut(id=row.id, type=row.type, created=row.created, received_at=row.received_at,
                           deliveries=row.deliveries, tenant_id=row.tenant_id, state=row.state,
                           effect=row.effect, error=row.error, applied_at=row.applied_at)


class _Applied(msgspec.Struct):
    state: str
    tenant_id: uuid.UUID | None
    effect: dict[str, Any]
    routing_changed: bool


class BillingEvents:
    def __init__(self, sessions: async_sessionmaker, settings: Settings, redis: Any = None) -> None:
        self.sessions = sessions
        self.settings = settings
        self.redis = redis
        self.recorder = EventRecorder(settings.catalog_database_url,
                                      connect_timeout=settings.catalog_connect_timeout_seconds,
                                      statement_timeout=settings.catalog_statement_timeout_seconds)

    async def close(self) -> None:
        await self.recorder.close()

    # --- arrival ---

    async def receive_webhook(self, payload: bytes, signature: str | None) -> WebhookAnswer:
        secrets = webhook_secrets(self.settings)
        if not secrets:
            raise WebhookNotConfigured("set STRIPE_WEBHOOK_SECRET to receive Stripe webhooks")
        verify_webhook(payload, signature, secrets)
        event = events.parse(payload)
        if b"\\u0000" in payload:  # PostgreSQL's jsonb cannot hold NUL
            raise InvalidEvent("the payload holds a NUL character")
        return await self._record(event, payload.decode())

    async def _record(self, event: events.StripeEvent, payload: str) -> WebhookAnswer:
        inserted, state = await self.recorder.record(event.id, event.type, event.created_at, payload)
        return WebhookAnswer(received=True, event_id=event.id, state=state, duplicate=not inserted)

    async def record(self, event: events.StripeEvent, raw: dict[str, Any]) -> WebhookAnswer:
        """Record one event; a second arrival of the same id only counts a delivery. Applying it is
        the applier's job (`apply_next`), so Stripe's wait is one INSERT, whatever the event does."""
        return await self._record(event, msgspec.json.encode(raw).decode())

    async def record_and_apply(self, event: events.StripeEvent, raw: dict[str, Any]) -> WebhookAnswer:
        """Record and apply at once (events that `sync` found missing: nobody waits on those)."""
        answer = await self.record(event, raw)
        if answer.duplicate:
            return answer
        state = await self.apply_one(event.id)
        return WebhookAnswer(received=True, event_id=event.id, state=state or answer.state, duplicate=False)

    async def apply_next(self) -> str | None:
        """Apply the oldest event still `received`, if any; the id it applied. None also when another
        applier holds the turn (it drains what is left). The row is claimed with SKIP LOCKED, so a
        `sync` or replay applying meanwhile never takes the same event."""
        return await self._apply_claimed(select(BillingEvent).where(BillingEvent.state == "received")
                                         .order_by(BillingEvent.created, BillingEvent.id).limit(1), _TRY_TURN)

    async def apply_one(self, event_id: str) -> str | None:
        """Apply this event if it is still `received` (and not being applied elsewhere); its state.
        It waits for the appliers' turn (one apply at a time, see the module's notes)."""
        await self._apply_claimed(select(BillingEvent).where(BillingEvent.id == event_id,
                                                             BillingEvent.state == "received"), _WAIT_TURN)
        async with self.sessions() as session:
            return await session.scalar(select(BillingEvent.state).where(BillingEvent.id == event_id))

    async def _apply_claimed(self, query: Any, turn: Any) -> str | None:
        event_id = None
        try:
            async with self.sessions() as session, session.begin():
                if await session.scalar(turn) is False:
                    return None
                row = await session.scalar(query.with_for_update(skip_locked=True))
                if row is None:
                    return None
                event_id = row.id
                event = events.from_dict(row.payload)
                applied = await self._apply(session, event)
                await self._finish(session, event.id, applied, None, events.tenants_named(event))
                noted = await self._note(session, applied)
        except Exception as exc:
            if event_id is None:
                raise
            await self._record_failure(event_id, exc)
            return event_id
        await self._announce(applied, noted)
        return event.id

    async def _record_failure(self, event_id: str, exc: Exception) -> None:
        """The effect was rolled back; keep the event as failed so it can be replayed."""
        log.error("billing event %s failed: %s", event_id, type(exc).__name__, exc_info=exc)
        async with self.sessions() as session, session.begin():
            await session.execute(update(BillingEvent).where(
                BillingEvent.id == event_id, BillingEvent.state.in_(("received", "failed", "parked")))
                .values(state="failed", error=type(exc).__name__[:200]))

    # --- applying ---

    async def _tenant(self, session: AsyncSession, about: events.Subject) -> Tenant | None:
        if about.tenant_hint is not None:
            tenant = await session.scalar(select(Tenant).where(Tenant.id == about.tenant_hint).with_for_update())
            if tenant is not None or about.customer_id is None:
                return tenant
        if about.customer_id is None:
            return None
        return await session.scalar(select(Tenant).where(Tenant.stripe_customer_id == about.customer_id)
                                    .with_for_update())

    async def _apply(self, session: AsyncSession, event: events.StripeEvent) -> _Applied:
        about = events.subject(event)
        if about is None:
            return _Applied("ignored", None, {"reason": "unhandled_type"}, False)
        tenant = await self._tenant(session, about)
        facts = None if tenant is None else events.TenantFacts(
            id=tenant.id, status=tenant.status, stripe_customer_id=tenant.stripe_customer_id,
            stripe_subscription_id=tenant.stripe_subscription_id, plan=tenant.plan)
        last = None
        if about.object_id is not None and tenant is not None:
            row = await session.scalar(select(BillingObject).where(BillingObject.object_id == about.object_id)
                                       .with_for_update())
            if row is not None and row.tenant_id != tenant.id:
                decision = events.Decision(state="parked", reason="object_of_another_tenant", tenant_id=tenant.id)
                return _Applied(decision.state, tenant.id, events.effect(decision, None), False)
            if row is not None:
                last = events.ObjectFacts(last_event_created=row.last_event_created, status=row.status,
                                          terminal=row.terminal, failed_at=row.failed_at)
        decision = events.decide(event, about, facts, last, price_plans=await self._price_plans(session, event),
                                 free_plan=self.settings.billing_free_plan)
        if decision.state != "applied" or tenant is None:
            return _Applied(decision.state, decision.tenant_id, events.effect(decision, None), False)
        if decision.object_update is not None:
            await self._save_object(session, tenant.id, event, decision.object_update)
        changes = dict(decision.tenant_changes)
        billing = None
        if decision.recompute_billing:
            billing = await self._derive_billing(session, tenant)
            changes.update(billing_status=billing.billing_status, paid_until=billing.paid_until,
                           past_due_since=billing.past_due_since)
            changes["billing_grace_until"] = self._grace_until(billing)
            if billing.billing_status == "ok":
                changes.update(await self._restoration(session, tenant))
        if decision.suspend:
            changes.update(await self._suspension(session, tenant, "subscription_deleted"))
        move = None
        if "plan" in changes and changes["plan"] != tenant.plan:
            move = await self._plan_tier(session, tenant, changes)
        # before the UPDATE, which also refreshes `tenant` in the session: what routers gate on changed?
        routing = any(k in changes and changes[k] != getattr(tenant, k) for k in ROUTED)
        if changes:
            await session.execute(update(Tenant).where(Tenant.id == tenant.id).values(**changes, updated_at=func.now()))
        if decision.dunning and billing is not None and billing.billing_status == "past_due":
            await session.execute(insert(DunningNotice).values(
                tenant_id=tenant.id, event_id=event.id, kind="payment_failed",
                payload={"invoice": decision.object_update.object_id if decision.object_update else None,
                         "past_due_since": billing.past_due_since.isoformat() if billing.past_due_since else None},
            ).on_conflict_do_nothing(index_elements=["event_id"]))
        effect = events.effect(decision, billing)
        if move:
            effect["move"] = move
        audit.record(session, ACTOR, f"billing.{event.type}", "tenant", tenant.id, event_id=event.id, effect=effect)
        return _Applied("applied", tenant.id, effect, routing)

    async def _price_plans(self, session: AsyncSession, event: events.StripeEvent) -> dict[str, str]:
        if not event.type.startswith("customer.subscription."):
            return {}
        price = events.price_of(event.data.object)[0]
        if price is None:
            return {}
        name = await session.scalar(select(Plan.name).where(literal(price) == any_(Plan.stripe_price_ids)).order_by(Plan.name))
        return {price: name} if name else {}

    async def _save_object(self, session: AsyncSession, tenant_id: uuid.UUID, event: events.StripeEvent,
                           update_: events.ObjectUpdate) -> None:
        values = dict(kind=update_.kind, tenant_id=tenant_id, last_event_created=event.created_at,
                      last_event_id=event.id, status=update_.status, price_id=update_.price_id,
                      period_end=update_.period_end, failed_at=update_.failed_at, terminal=update_.terminal)
        await session.execute(insert(BillingObject).values(object_id=update_.object_id, **values)
                              .on_conflict_do_update(index_elements=["object_id"], set_=values))

    async def _derive_billing(self, session: AsyncSession, tenant: Tenant) -> events.BillingState:
        rows = (await session.execute(select(BillingObject.status, BillingObject.period_end, BillingObject.failed_at)
                                      .where(BillingObject.tenant_id == tenant.id,
                                             BillingObject.kind == "invoice"))).all()
        invoices = [events.InvoiceFacts(status=r.status, period_end=r.period_end, failed_at=r.failed_at) for r in rows]
        return events.derive_billing(invoices, tenant.paid_until)

    async def _plan_tier(self, session: AsyncSession, tenant: Tenant, changes: dict[str, Any]) -> dict[str, Any] | None:
        """A plan with a tier moves the tenant there (and a plan's `tier_on_leave` moves a tenant
        leaving it for a plan without a tier). The move is queued in this transaction, like the
        move service does; with another operation open (or the tenant not active) it is left in
        `pending_tier` for the workers' billing round to queue once the tenant is idle."""
        rows = {row.name: row for row in (await session.execute(
            select(Plan.name, Plan.tier, Plan.tier_on_leave).where(Plan.name.in_([changes["plan"], tenant.plan])))).all()}
        new, old = rows.get(changes["plan"]), rows.get(tenant.plan)
        wanted = (new.tier if new is not None else None) or (old.tier_on_leave if old is not None else None)
        if wanted is None:
            return None
        changes["pending_tier"] = None
        if wanted == tenant.tier:
            return None
        db = DriverSQL(await session.connection())
        busy = await queue.open_operation(db, tenant.id)
        if busy is not None or tenant.status != "active":
            changes["pending_tier"] = wanted
            return {"tier": wanted, "pending": True, "blocked_by": str(busy.id) if busy else tenant.status}
        operation = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant.id, params={"tier": wanted})
        await queue.enqueue(db, "move_tenant", operation)
        return {"tier": wanted, "operation_id": str(operation.id)}

    def _grace_until(self, billing: events.BillingState) -> dt.datetime | None:
        """Routers admit a past-due tenant for BILLING_GRACE_DAYS after its first unpaid failure."""
        if billing.billing_status != "past_due" or billing.past_due_since is None:
            return None
        return billing.past_due_since + dt.timedelta(days=self.settings.billing_grace_days)

    async def _suspension(self, session: AsyncSession, tenant: Tenant, reason: str) -> dict[str, Any]:
        """A cancelled subscription with no free plan suspends the tenant, recorded as a one-step
        operation like an admin's suspend; a tenant busy with another operation is left as it is
        (the effect says so) rather than suspended under a running move."""
        if tenant.status != "active":
            return {}
        db = DriverSQL(await session.connection())
        if await queue.open_operation(db, tenant.id) is not None:
            return {}
        await queue.record_done(db, uuid.uuid4(), "suspend_tenant", tenant.id, "set_status", {"reason": reason})
        return {"status": "suspended"}

    async def _restoration(self, session: AsyncSession, tenant: Tenant) -> dict[str, Any]:
        """Paid again: a tenant that billing suspended (not one an admin did) is resumed."""
        if tenant.status != "suspended":
            return {}
        db = DriverSQL(await session.connection())
        last = await queue.last_status_change(db, tenant.id)
        if last is None or last[0] != "suspend_tenant" or last[1].get("reason") not in BILLING_SUSPENSIONS:
            return {}
        if await queue.open_operation(db, tenant.id) is not None:
            return {}
        await queue.record_done(db, uuid.uuid4(), "resume_tenant", tenant.id, "set_status", {"reason": "paid"})
        return {"status": "active"}

    async def _finish(self, session: AsyncSession, event_id: str, applied: _Applied, error: str | None,
                      named: list[uuid.UUID]) -> None:
        """The event's outcome. One of an erased tenant keeps only its id and type (as the erasure's
        scrub leaves those recorded before it, provisioning/erasure_billing.py): Stripe's answers to
        the erasure itself (`customer.deleted`, ...) arrive after it, with the customer's details."""
        values: dict[str, Any] = dict(state=applied.state, tenant_id=applied.tenant_id, effect=applied.effect,
                                      error=error, applied_at=func.now() if applied.state == "applied" else None)
        tenants = sorted({*named, *([applied.tenant_id] if applied.tenant_id else [])})
        if tenants:
            erased = select(TenantErasure.tenant_id).where(TenantErasure.tenant_id.in_(tenants)).exists()
            values["payload"] = case((erased, _ERASED_STUB), else_=BillingEvent.payload)
        await session.execute(update(BillingEvent).where(BillingEvent.id == event_id).values(**values))

    async def _note(self, session: AsyncSession, applied: _Applied) -> list[int]:
        """The announcement's outbox row, in the apply's transaction (notify.note)."""
        if applied.routing_changed and applied.tenant_id is not None:
            return await notify.note(self.redis, session, [applied.tenant_id])
        return []

    async def _announce(self, applied: _Applied, noted: list[int]) -> None:
        if applied.routing_changed and applied.tenant_id is not None:
            await notify.placement_changed(self.redis, applied.tenant_id, noted=noted)

    # --- the admin side ---

    async def list(self, state: str | None, limit: int) -> BillingEventList:
        query = select(BillingEvent).order_by(BillingEvent.received_at.desc(), BillingEvent.id).limit(limit)
        if state == "duplicate":
            query = query.where(BillingEvent.deliveries > 1)
        elif state is not None:
            query = query.where(BillingEvent.state == state)
        async with self.sessions() as session:
            return BillingEventList(items=[_out(row) for row in (await session.scalars(query)).all()])

    async def get(self, event_id: str) -> BillingEventOut:
        if not _EVENT_ID.fullmatch(event_id):  # names no event (and a NUL never reaches SQL)
            raise BillingEventNotFound(f"no billing event {event_id[:100]!r}")
        async with self.sessions() as session:
            row = await session.scalar(select(BillingEvent).where(BillingEvent.id == event_id))
        if row is None:
            raise BillingEventNotFound(f"no billing event {event_id[:100]!r}")
        return _out(row)

    async def replay(self, actor: str, event_id: str) -> BillingEventOut:
        if not _EVENT_ID.fullmatch(event_id):  # names no event (and a NUL never reaches SQL)
            raise BillingEventNotFound(f"no billing event {event_id[:100]!r}")
        async with self.sessions() as session, session.begin():
            row = await session.scalar(select(BillingEvent).where(BillingEvent.id == event_id).with_for_update())
            if row is None:
                raise BillingEventNotFound(f"no billing event {event_id[:100]!r}")
            if row.state not in REPLAYABLE:
                raise EventNotReplayable(f"event {row.id} is {row.state}", state=row.state)
            if row.payload.get("erased") is True:  # its tenant's erasure kept only its id and type
                raise EventNotReplayable(f"event {row.id} was erased with its tenant", state=row.state)
            event = events.from_dict(row.payload)
            previous = row.state
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(_WAIT_TURN)  # in order with the appliers
                # locked again: a replay racing another replay applies once
                row = await session.scalar(select(BillingEvent).where(BillingEvent.id == event_id).with_for_update())
                if row is None or row.state not in REPLAYABLE:
                    raise EventNotReplayable(f"event {event_id} was replayed meanwhile")
                applied = await self._apply(session, event)
                await self._finish(session, event.id, applied, None, events.tenants_named(event))
                audit.record(session, actor, "billing.replay", "billing_event", event.id, previous=previous,
                             state=applied.state)
                noted = await self._note(session, applied)
        except EventNotReplayable:
            raise
        except Exception as exc:
            await self._record_failure(event.id, exc)
        else:
            await self._announce(applied, noted)
        async with self.sessions() as session:
            return _out(await session.scalar(select(BillingEvent).where(BillingEvent.id == event_id)))
