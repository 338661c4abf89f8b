"""Catching up with Stripe: list the events since the last checkpoint and record the missing ones,
so an outage longer than Stripe's webhook retries loses nothing. Events already recorded are
duplicates (nothing happens twice); the checkpoint moves to the newest event seen."""

from __future__ import annotations

import datetime as dt
import time

import msgspec
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.billing import events
from control_plane.billing.errors import BillingNotConfigured, InvalidEvent
from control_plane.billing.outbound import BillingCalls
from control_plane.billing.service import BillingEvents
from control_plane.billing.stripe_client import StripeGateway
from control_plane.catalog.models import BillingSyncCheckpoint

CHECKPOINT = "events"
STRIPE_KEEPS_SECONDS = 30 * 86400
MAX_PAGES = 200  # 20,000 events a run; the next run goes on from the checkpoint


class SyncReport(msgspec.Struct, kw_only=True):
    since: dt.datetime
    listed: int
    recorded: int  # new to us: applied, parked, ignored or failed as each deserved
    duplicates: int
    invalid: int
    checkpoint: dt.datetime | None
    subscriptions_cancelled: int = 0  # of deleted tenants, left over by the API's loop


class BillingSync:
    def __init__(self, sessions: async_sessionmaker, billing_events: BillingEvents,
                 gateway: StripeGateway | None, calls: BillingCalls | None = None) -> None:
        self.sessions = sessions
        self.calls = calls
        self.events = billing_events
        self.gateway = gateway

    async def run(self) -> SyncReport:
        if self.gateway is None:
            raise BillingNotConfigured("set STRIPE_API_KEY to list events from Stripe")
        async with self.sessions() as session:
            checkpoint = await session.get(BillingSyncCheckpoint, CHECKPOINT)
        oldest = int(time.time()) - STRIPE_KEEPS_SECONDS
        # the checkpoint's own second again: events of that second may have been listed only in part
        since = max(oldest, int(checkpoint.last_created.timestamp())) if checkpoint else oldest
        listed: list[dict] = []
        starting_after = None
        for _ in range(MAX_PAGES):
            page = await self.gateway.list_events(created_from=since, starting_after=starting_after)
            listed.extend(page.events)
            if not page.has_more or not page.events:
                break
            starting_after = page.events[-1].get("id")
        report = SyncReport(since=dt.datetime.fromtimestamp(since, dt.UTC), listed=len(listed), recorded=0,
                            duplicates=0, invalid=0, checkpoint=checkpoint.last_created if checkpoint else None)
        parsed = []
        for raw in listed:
            try:
                parsed.append((events.from_dict(raw), raw))
            except InvalidEvent:
                report.invalid += 1
        newest = None
        for event, raw in sorted(parsed, key=lambda pair: (pair[0].created, pair[0].id)):  # oldest first
            answer = await self.events.record_and_apply(event, raw)
            if answer.duplicate:
                report.duplicates += 1
            else:
                report.recorded += 1
            newest = event
        if newest is not None:
            async with self.sessions() as session, session.begin():
                values = {"last_created": newest.created_at, "last_event_id": newest.id, "updated_at": func.now()}
                await session.execute(insert(BillingSyncCheckpoint).values(name=CHECKPOINT, **values)
                                      .on_conflict_do_update(index_elements=["name"], set_=values,
                                                             where=BillingSyncCheckpoint.last_created <= newest.created_at))
                report.checkpoint = await session.scalar(select(BillingSyncCheckpoint.last_created)
                                                         .where(BillingSyncCheckpoint.name == CHECKPOINT))
        if self.calls is not None:
            report.subscriptions_cancelled = await self.calls.cancel_for_deleted()
        return report
