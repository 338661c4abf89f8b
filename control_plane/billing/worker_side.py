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
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.services import notify
from control_plane.settings import Settings
from provisioning.announcements import BatchedAnnouncements, redis_client

POOL_SIZE = 2  # one apply at a time, plus a failure being recorded


class WorkerApplier:
    def __init__(self, settings: Settings) -> None:
        self._engine = create_engine(settings.catalog_database_url, pool_size=POOL_SIZE,
                                     connect_timeout=settings.catalog_connect_timeout_seconds,
                                     statement_timeout=settings.catalog_statement_timeout_seconds)
        self._redis = (redis_client(settings.redis_url, settings.redis_timeout_seconds)
                       if settings.redis_url else None)
        # plan changes reach the routers through the same bounded, batched announcements as the API's
        self._announcer = (BatchedAnnouncements(self._redis, timeout=settings.redis_timeout_seconds,
                                                outbox=notify.catalog_outbox(self._engine))
                           if self._redis is not None else None)
        self.events = BillingEvents(sessionmaker(self._engine), settings, self._announcer)
        self.applier = EventApplier(self.events)

    async def run(self) -> None:
        await self.applier.run()

    @property
    def wakes(self) -> dict[str, Callable[[], None]]:
        return {BILLING_EVENTS_CHANNEL: self.applier.wake}

    async def close(self) -> None:
        await self.events.close()
        if self._announcer is not None:
            await self._announcer.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        await self._engine.dispose()
