"""The erasure saga's Stripe step (erasure.py runs it): `delete_stripe_customer` cancels the
tenant's subscription (if the delete's cancellation round has not yet) and deletes its customer.

The provisioner never calls Stripe itself (stripe has one home, control_plane/billing): the worker
is handed a `StripeCustomers` (control_plane/billing/customer_erasure.py) by the process that
composes it, and only with STRIPE_API_KEY set. Without one the step completes and the report says
`not_configured`, so an erasure never waits on billing that is not there. Idempotency lives in the
billing side's calls (each key committed before its call, the tenant's Stripe ids forgotten once
Stripe answered), so a rerun after SIGKILL finds nothing left or sends the same request again.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import msgspec

from provisioning.context import StepContext

STRIPE_KEEPS = ("Stripe keeps a deleted customer retrievable by its id (marked deleted, without its payment "
                "methods or subscriptions); its invoices and payments stay in Stripe's records")


class StripeCustomers(Protocol):
    async def erase_customer(self, tenant_id: uuid.UUID) -> dict[str, str | None]:
        """Cancel the subscription, then delete the customer; what was done now."""


async def _record(ctx: StepContext, entry: dict[str, Any]) -> None:
    await ctx.catalog.execute(
        "UPDATE tenant_erasures SET places = places || jsonb_build_object('stripe_customer', "
        "  $2::jsonb || jsonb_build_object('at', now())) WHERE tenant_id = $1",
        ctx.tenant_id, msgspec.json.encode(entry).decode())


async def delete_stripe_customer(ctx: StepContext) -> None:
    """Its subscription cancelled first (Stripe would end it with the customer, but only our
    cancellation clears the catalog's record of it), then the customer deleted. `state`: deleted
    (now or by a run before this one), none (the tenant had no customer) or not_configured (no
    STRIPE_API_KEY in the workers: whatever Stripe holds stays)."""
    present = bool(ctx.params["inventory"].get("stripe_customer"))
    if ctx.customers is None:
        await _record(ctx, {"state": "not_configured", "removed": False, "present": present,
                            "remains": "the Stripe customer and its subscription, if the tenant had one, stay "
                                       "at Stripe (no STRIPE_API_KEY in the workers): delete them there by hand"})
        return
    await ctx.customers.erase_customer(ctx.tenant_id)
    # what this run did is not the report: a customer already gone (a rerun after a crash) was
    # deleted by this erasure all the same, since the inventory saw it before anything was removed
    await _record(ctx, {"state": "deleted" if present else "none", "removed": present,
                        "remains": STRIPE_KEEPS if present else "none"})
