"""The API process's round that cancels the Stripe subscriptions of deleted tenants: woken by each
delete (so the subscription ends within moments), and every minute otherwise (so one that failed,
say while Stripe was down, is tried again). The idempotency key of each cancellation makes a
concurrent second call from another API process the same request to Stripe."""

from __future__ import annotations

from control_plane.billing.outbound import BillingCalls
from control_plane.billing.rounds import Rounds

INTERVAL_SECONDS = 60.0


class Cancellations(Rounds):
    def __init__(self, calls: BillingCalls, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__("cancelled subscriptions of deleted tenants", calls.cancel_for_deleted, interval)
        self.calls = calls

    def start(self) -> None:
        if self.calls.gateway is not None:  # without an API key there is nothing to call
            super().start()
