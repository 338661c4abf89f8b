"""Billing's request and response bodies."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from control_plane.schemas import PlanName, Strict

# where Stripe sends the customer back: an absolute http(s) URL without spaces or control characters
Url = Annotated[str, Meta(min_length=8, max_length=2000, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
EventState = Literal["received", "applied", "duplicate", "parked", "ignored", "failed"]


class StartCheckout(Strict):
    plan: PlanName
    success_url: Url
    cancel_url: Url


class CheckoutOut(msgspec.Struct, kw_only=True):
    url: str
    session_id: str


class OpenPortal(Strict):
    return_url: Url


class PortalOut(msgspec.Struct, kw_only=True):
    url: str


class WebhookAnswer(msgspec.Struct, kw_only=True):
    received: bool
    event_id: str
    state: str
    duplicate: bool


class BillingEventOut(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created: dt.datetime
    received_at: dt.datetime
    deliveries: int
    tenant_id: uuid.UUID | None
    state: str
    effect: dict[str, Any]
    error: str | None
    applied_at: dt.datetime | None


class BillingEventList(msgspec.Struct, kw_only=True):
    items: list[BillingEventOut]
