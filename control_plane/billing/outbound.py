"""Calls to Stripe on a tenant's behalf: its customer, a checkout session, a portal session, the
cancellation of its subscription, the deletion of its customer (erasure). Each follows one shape:
claim an idempotency key and commit it, call Stripe with it, then record the answer and complete
the key in a second transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.billing import idempotency
from control_plane.billing.errors import BillingNotConfigured, PlanNotForSale
from control_plane.billing.schemas import CheckoutOut, OpenPortal, PortalOut, StartCheckout
from control_plane.billing.stripe_client import StripeGateway
from control_plane.catalog.models import Plan, Tenant
from control_plane.services import audit
from control_plane.services.lookup import find_tenant


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class BillingCalls:
    def __init__(self, sessions: async_sessionmaker, gateway: StripeGateway | None) -> None:
        self.sessions = sessions
        self.gateway = gateway

    def _stripe(self) -> StripeGateway:
        if self.gateway is None:
            raise BillingNotConfigured("set STRIPE_API_KEY to create checkout and portal sessions")
        return self.gateway

    async def ensure_customer(self, actor: str, key: str) -> tuple[uuid.UUID, str]:
        """The tenant's Stripe customer, created (with metadata.tenant_id) if it has none."""
        stripe = self._stripe()
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            if tenant.stripe_customer_id:
                return tenant.id, tenant.stripe_customer_id
            tenant_id, slug = tenant.id, tenant.slug
            ikey = await idempotency.claim(session, f"customer:{tenant_id}")
        # the slug never changes, so a retry with this key sends exactly the same request
        customer = await stripe.create_customer(tenant_id, slug, ikey)
        async with self.sessions() as session, session.begin():
            await session.execute(update(Tenant).where(Tenant.id == tenant_id, Tenant.stripe_customer_id.is_(None))
                                  .values(stripe_customer_id=customer.id, updated_at=func.now()))
            await idempotency.complete(session, ikey, customer.id)
            audit.record(session, actor, "billing.customer_create", "tenant", tenant_id, customer=customer.id)
            current = await session.scalar(select(Tenant.stripe_customer_id).where(Tenant.id == tenant_id))
        return tenant_id, current or customer.id

    async def checkout(self, actor: str, key: str, body: StartCheckout) -> CheckoutOut:
        stripe = self._stripe()
        async with self.sessions() as session:
            await find_tenant(session, key)  # 404 before anything else, and before Stripe is called
            plan = await session.get(Plan, body.plan)
            if plan is None:
                raise errors.UnknownPlan(f"no plan {body.plan!r}")
            if not plan.stripe_price_ids:
                raise PlanNotForSale(f"plan {body.plan!r} lists no Stripe price")
            price = plan.stripe_price_ids[0]
        tenant_id, customer_id = await self.ensure_customer(actor, key)
        purpose = f"checkout:{tenant_id}:{_digest(price, body.success_url, body.cancel_url)}"
        async with self.sessions() as session, session.begin():
            ikey = await idempotency.claim(session, purpose)
        checkout = await stripe.create_checkout_session(
            tenant_id=tenant_id, customer_id=customer_id, price_id=price, success_url=body.success_url,
            cancel_url=body.cancel_url, idempotency_key=ikey)
        async with self.sessions() as session, session.begin():
            await idempotency.complete(session, ikey, checkout.id)
            audit.record(session, actor, "billing.checkout", "tenant", tenant_id, plan=body.plan,
                         session_id=checkout.id)
        return CheckoutOut(url=checkout.url, session_id=checkout.id)

    async def portal(self, actor: str, key: str, body: OpenPortal) -> PortalOut:
        stripe = self._stripe()
        tenant_id, customer_id = await self.ensure_customer(actor, key)
        async with self.sessions() as session, session.begin():
            ikey = await idempotency.claim(session, f"portal:{tenant_id}:{_digest(body.return_url)}")
        portal = await stripe.create_portal_session(customer_id=customer_id, return_url=body.return_url,
                                                    idempotency_key=ikey)
        async with self.sessions() as session, session.begin():
            await idempotency.complete(session, ikey, "portal")
            audit.record(session, actor, "billing.portal", "tenant", tenant_id)
        return PortalOut(url=portal.url)

    async def cancel_subscription(self, actor: str, tenant_id: uuid.UUID) -> str | None:
        """Cancel the tenant's subscription; None when it has none. Once Stripe answered, the
        tenant forgets the subscription (so it is never cancelled twice)."""
        stripe = self._stripe()
        return await self._once_then_forget(
            actor, tenant_id, Tenant.stripe_subscription_id, "cancel", stripe.cancel_subscription,
            lambda subscription, status: ("billing.subscription_cancel",
                                          {"subscription": subscription, "status": status}))

    async def delete_customer(self, actor: str, tenant_id: uuid.UUID) -> str | None:
        """Delete the tenant's Stripe customer (erasure); None when it has none. Once Stripe
        answered, the tenant forgets the customer, so a rerun finds nothing left to delete; a rerun
        between Stripe's answer and that is the same request again (the key, then a 404: done)."""
        stripe = self._stripe()
        return await self._once_then_forget(
            actor, tenant_id, Tenant.stripe_customer_id, "delete_customer", stripe.delete_customer,
            lambda _customer, outcome: ("billing.customer_delete", {"outcome": outcome}))

    async def _once_then_forget(self, actor: str, tenant_id: uuid.UUID, column: Any, key_prefix: str,
                                call: Callable[[str, str], Awaitable[str]],
                                audited: Callable[[str, str], tuple[str, dict[str, Any]]]) -> str | None:
        """One Stripe call on the Stripe object the tenant's `column` names: its idempotency key
        committed before the call, then the tenant forgets the object, the key is completed and
        the call audited in one transaction. None when the tenant names no such object."""
        async with self.sessions() as session, session.begin():
            stripe_id = await session.scalar(select(column).where(Tenant.id == tenant_id))
            if not stripe_id:
                return None
            ikey = await idempotency.claim(session, f"{key_prefix}:{stripe_id}")
        outcome = await call(stripe_id, ikey)
        async with self.sessions() as session, session.begin():
            await session.execute(update(Tenant).where(Tenant.id == tenant_id, column == stripe_id)
                                  .values({column.key: None, "updated_at": func.now()}))
            await idempotency.complete(session, ikey, stripe_id)
            action, details = audited(stripe_id, outcome)
            audit.record(session, actor, action, "tenant", tenant_id, **details)
        return outcome

    async def cancel_for_deleted(self, actor: str = "billing", limit: int = 100) -> int:
        """Cancel the subscriptions of deleted (or deleting) tenants; how many were cancelled.
        The tenant row is the record of what is owed, so a crash or an outage of Stripe loses
        nothing: the next run (the API's loop, `tenantctl billing sync`) does what is left."""
        if self.gateway is None:
            return 0
        async with self.sessions() as session:
            owed = list(await session.scalars(select(Tenant.id).where(
                Tenant.status.in_(("deleting", "deleted")), Tenant.stripe_subscription_id.is_not(None))
                .order_by(Tenant.id).limit(limit)))
        done = 0
        for tenant_id in owed:
            if await self.cancel_subscription(actor, tenant_id) is not None:
                done += 1
        return done
