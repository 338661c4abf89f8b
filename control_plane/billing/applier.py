"""The round that applies recorded Stripe events, run by the workers (worker_side.py; or by the
API with BILLING_APPLY_IN=api). The webhook only records an event (one INSERT, so Stripe's wait
does not depend on what the event does) and its NOTIFY wakes this round; it applies every event
still `received`, oldest first, each in its own transaction (`BillingEvents.apply_next`). A
process stopped mid-apply leaves the event `received`: the next round of any applier applies it."""

from __future__ import annotations

from control_plane.billing.rounds import Rounds
from control_plane.billing.service import BillingEvents

INTERVAL_SECONDS = 5.0
BATCH = 500  # per round, so a backlog never starves the wait for the next wake


class EventApplier(Rounds):
    def __init__(self, billing_events: BillingEvents, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__("applied billing events", self.drain, interval)
        self.events = billing_events

    async def drain(self) -> int:
        applied = 0
        while applied < BATCH and await self.events.apply_next() is not None:
            applied += 1
        if applied == BATCH:
            self.wake()  # more may be waiting: go round again at once
        return applied
