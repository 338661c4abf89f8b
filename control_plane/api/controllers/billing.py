"""Billing routes: the Stripe webhook (guarded by its signature, not the admin token), the event
log, and checkout and portal sessions for a tenant (admin)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter, QueryParameter

from control_plane.billing.schemas import (
    BillingEventList,
    BillingEventOut,
    CheckoutOut,
    EventState,
    OpenPortal,
    PortalOut,
    StartCheckout,
    WebhookAnswer,
)
from control_plane.billing.sync import SyncReport
from control_plane.billing.wiring import BillingServices

# Stripe events are a few kB; an invoice with many lines can pass the admin API's 64 KiB
WEBHOOK_MAX_BODY_BYTES = 512 * 1024
KeyParam = Annotated[str, Parameter(max_length=100, description="tenant id or slug")]


def _billing(request: Request) -> BillingServices:
    return request.app.state.billing


@post("/v1/billing/stripe/webhook", status_code=200, tags=["billing"], request_max_body_size=WEBHOOK_MAX_BODY_BYTES,
      summary="Stripe webhook endpoint (signed by Stripe; no admin token)")
async def stripe_webhook(request: Request) -> WebhookAnswer:
    payload = await request.body()  # the raw bytes: the signature covers them exactly
    billing = _billing(request)
    answer = await billing.events.receive_webhook(payload, request.headers.get("stripe-signature"))
    if answer.state == "received":
        billing.recorded()  # applied within moments, after Stripe has its answer
    return answer


class BillingEventController(Controller):
    path = "/v1/billing/events"
    opt = {"area": "billing"}  # the scopes it needs: control_plane/scopes.py
    tags = ["billing"]

    @get("/", summary="Stripe events as they arrived, newest first, with their tenant and effect")
    async def list_events(self, request: Request,
                          wanted: Annotated[EventState | None, QueryParameter(name="state")] = None,
                          limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100) -> BillingEventList:
        # `state` is a name Litestar reserves for the app state, hence the alias
        return await _billing(request).events.list(wanted, limit)

    @get("/{event_id:str}", summary="One Stripe event: its state (received until applied), tenant and effect")
    async def get_event(self, request: Request, event_id: Annotated[str, Parameter(max_length=255)]) -> BillingEventOut:
        return await _billing(request).events.get(event_id)

    @post("/{event_id:str}/replay", status_code=200, summary="Apply a parked or failed event again")
    async def replay(self, request: Request, event_id: Annotated[str, Parameter(max_length=255)]) -> BillingEventOut:
        return await _billing(request).events.replay(request.state.actor, event_id)


class BillingSyncController(Controller):
    path = "/v1/billing/sync"
    opt = {"area": "billing"}  # the scopes it needs: control_plane/scopes.py
    tags = ["billing"]

    @post("/", status_code=200, summary="List Stripe's events since the last checkpoint and apply the missing ones")
    async def sync(self, request: Request) -> SyncReport:
        return await _billing(request).sync.run()


class TenantBillingController(Controller):
    path = "/v1/tenants"
    opt = {"area": "billing"}  # the scopes it needs: control_plane/scopes.py
    tags = ["billing"]

    @post("/{key:str}/billing/checkout", status_code=200,
          summary="A Stripe Checkout session for a plan (creates the tenant's customer first)")
    async def checkout(self, request: Request, key: KeyParam, data: JSONBody[StartCheckout]) -> CheckoutOut:
        return await _billing(request).calls.checkout(request.state.actor, key, data)

    @post("/{key:str}/billing/portal", status_code=200, summary="A Stripe billing portal session")
    async def portal(self, request: Request, key: KeyParam, data: JSONBody[OpenPortal]) -> PortalOut:
        return await _billing(request).calls.portal(request.state.actor, key, data)


ADMIN_CONTROLLERS = [BillingEventController, BillingSyncController, TenantBillingController]
PUBLIC_HANDLERS = [stripe_webhook]
