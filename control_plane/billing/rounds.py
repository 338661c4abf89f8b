"""A round of work run in the background, by the API process (`start`/`stop`, its own task) or by
a worker (`run`, one of the worker's supervised duties): woken when there is something to do (so
it happens within moments), and every `interval` seconds otherwise (so what failed, say while
Stripe or the catalog was away, is tried again and what a stopped process left is picked up).
Several processes may run the same round: each round is safe to run side by side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("tenantplane.billing")


class Rounds:
    def __init__(self, what: str, round_: Callable[[], Awaitable[int]], interval: float) -> None:
        self.what = what
        self.round = round_
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"billing: {self.what}")

    async def stop(self) -> None:
        """Cancelled mid-round, the round's transaction rolls back: the next start does it again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Rounds until cancelled; a round that failed is logged and tried again, never a death."""
        while True:
            self._wake.clear()
            try:
                done = await self.round()
                if done:
                    log.info("%s: %d", self.what, done)
            except Exception as exc:  # the next wake or interval tries again
                log.warning("%s failed: %s", self.what, type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
