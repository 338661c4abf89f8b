"""Billing's services as the API process builds them once from the settings. The event applier
is here only with BILLING_APPLY_IN=api; by default the workers run it (billing/worker_side.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.billing.applier import EventApplier
from control_plane.billing.cancellations import Cancellations
from control_plane.billing.outbound import BillingCalls
from control_plane.billing.service import BillingEvents
from control_plane.billing.stripe_client import StripeGateway
from control_plane.billing.sync import BillingSync
from control_plane.settings import Settings


class BillingServices(msgspec.Struct):
    events: BillingEvents
    calls: BillingCalls
    sync: BillingSync
    cancellations: Cancellations
    applier: EventApplier | None  # None: the workers apply (BILLING_APPLY_IN=worker)
    gateway: StripeGateway | None

    def start(self) -> None:
        if self.applier is not None:
            self.applier.start()
        self.cancellations.start()

    def recorded(self) -> None:
        """A new event was recorded: an applier in this process goes round at once (the workers'
        appliers are woken by the recorder's NOTIFY)."""
        if self.applier is not None:
            self.applier.wake()

    async def close(self) -> None:
        if self.applier is not None:
            await self.applier.stop()
        await self.events.close()
        await self.cancellations.stop()
        if self.gateway is not None:
            await self.gateway.close()


def build(settings: Settings, sessions: async_sessionmaker, redis: Any) -> BillingServices:
    """Without STRIPE_API_KEY there is no gateway: outbound calls answer 503, webhooks still work."""
    gateway = (StripeGateway(settings.stripe_api_key, settings.stripe_api_base)
               if settings.stripe_api_key else None)
    billing_events = BillingEvents(sessions, settings, redis)
    calls = BillingCalls(sessions, gateway)
    return BillingServices(events=billing_events, calls=calls,
                           sync=BillingSync(sessions, billing_events, gateway, calls),
                           cancellations=Cancellations(calls),
                           applier=EventApplier(billing_events) if settings.billing_apply_in == "api" else None,
                           gateway=gateway)
