"""The API process's loop that cancels the Stripe subscriptions of deleted tenants: woken by each
delete (so the subscription ends within moments), and every `interval` seconds otherwise (so one
that failed, say while Stripe was down, is tried again). Several API processes may run it: the
idempotency key of each cancellation makes a concurrent second call the same request to Stripe."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from control_plane.billing.outbound import BillingCalls

log = logging.getLogger("tenantplane.billing")

INTERVAL_SECONDS = 60.0


class Cancellations:
    def __init__(self, calls: BillingCalls, interval: float = INTERVAL_SECONDS) -> None:
        self.calls = calls
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.calls.gateway is not None and self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                cancelled = await self.calls.cancel_for_deleted()
                if cancelled:
                    log.info("cancelled %d subscription(s) of deleted tenants", cancelled)
            except Exception as exc:  # Stripe or the catalog away: the next round tries again
                log.warning("cancelling subscriptions of deleted tenants failed: %s", type(exc).__name__)
