"""The Stripe half of an erasure, as the workers run it: the erasure saga's `delete_stripe_customer`
step (provisioning/erasure_stripe.py) calls `erase_customer`, which cancels the tenant's
subscription if the delete's cancellation round has not yet, then deletes its customer. Both go
through BillingCalls, so each call's idempotency key is committed before the call and a worker
SIGKILLed anywhere reruns the same requests.

The worker composes it (control_plane/cli/processes.py) only with STRIPE_API_KEY set: the
provisioner imports nothing of the control plane, it is handed this object (the protocol it calls
is provisioning.erasure_stripe.StripeCustomers)."""

from __future__ import annotations

import uuid

from control_plane.billing.outbound import BillingCalls
from control_plane.billing.stripe_client import StripeGateway
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.settings import Settings

ACTOR = "erasure"  # the audit rows' actor
POOL_SIZE = 1  # one erasure's calls at a time per worker are plenty


class CustomerErasure:
    def __init__(self, settings: Settings) -> None:
        if not settings.stripe_api_key:
            raise ValueError("CustomerErasure needs STRIPE_API_KEY")
        self._engine = create_engine(settings.catalog_database_url, pool_size=POOL_SIZE,
                                     connect_timeout=settings.catalog_connect_timeout_seconds,
                                     statement_timeout=settings.catalog_statement_timeout_seconds)
        self.gateway = StripeGateway(settings.stripe_api_key, settings.stripe_api_base)
        self.calls = BillingCalls(sessionmaker(self._engine), self.gateway)

    async def erase_customer(self, tenant_id: uuid.UUID) -> dict[str, str | None]:
        """What was done now: the subscription's status after its cancellation and the customer's
        deletion ("deleted", "missing": gone already), None for what the tenant no longer had."""
        subscription = await self.calls.cancel_subscription(ACTOR, tenant_id)
        customer = await self.calls.delete_customer(ACTOR, tenant_id)
        return {"subscription": subscription, "customer": customer}

    async def close(self) -> None:
        await self.gateway.close()
        await self._engine.dispose()
