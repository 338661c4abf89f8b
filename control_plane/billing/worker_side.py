"""The billing event applier as a worker process runs it (`tenantctl worker`, with
BILLING_APPLY_IN=worker, the default): the webhook in the API only records, and the applier's CPU
(about ten statements per event) is spent in the workers, not beside the webhook's answers.

The worker composes it (control_plane/cli/processes.py): `run` is one of its supervised duties,
and `wakes` are the NOTIFY channels the worker's wake-up listener also LISTENs on for it (the
recorder notifies after its INSERT, debounced), with the applier's interval as the fallback.
Every worker may run one: see service.py for how they take turns."""

from __future__ import annotations

from collections.abc import Callable

from contracts.channels import BILLING_EVENTS_CHANNEL
from control_plane.billing.applier import EventApplier
from control_plane.billing.service import BillingEvents
from control_plane.catalog.db import sessionmaker
from control_plane.services import notify
from control_plane.settings import Settings

POOL_SIZE = 2  # one apply at a time, plus a failure being recorded


class WorkerApplier:
    def __init__(self, settings: Settings) -> None:
        # plan changes reach the routers through the same bounded, batched announcements as the API's
        self._side = notify.CatalogSide(settings, pool_size=POOL_SIZE)
        self.events = BillingEvents(sessionmaker(self._side.engine), settings, self._side.announcer)
        self.applier = EventApplier(self.events)

    async def run(self) -> None:
        await self.applier.run()

    @property
    def wakes(self) -> dict[str, Callable[[], None]]:
        return {BILLING_EVENTS_CHANNEL: self.applier.wake}

    async def close(self) -> None:
        await self.events.close()
        await self._side.close()
