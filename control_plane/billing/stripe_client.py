"""The project's one home of the Stripe SDK: outbound calls and webhook signature checks.

Every call that creates or changes something takes the idempotency key the caller persisted
before calling, so a retry after a crash is the same request to Stripe, which answers it with the
first answer instead of doing it twice. Errors leave as StripeUnavailable with Stripe's error
type and code only: nothing of the key or the request is repeated.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import msgspec
import stripe

from control_plane.billing.errors import InvalidSignature, StripeUnavailable

log = logging.getLogger("tenantplane.billing")

SIGNATURE_TOLERANCE_SECONDS = 300


def verify_webhook(payload: bytes, header: str | None, secrets: Sequence[str],
                   tolerance: int = SIGNATURE_TOLERANCE_SECONDS) -> None:
    """Stripe's scheme on the raw bytes: any one of `secrets` (a rotation keeps two valid) must
    have signed `t.payload` with HMAC-SHA256, and `t` be at most `tolerance` seconds old."""
    if not header:
        raise InvalidSignature("the Stripe-Signature header is missing")
    if len(header) > 4096:
        raise InvalidSignature("the Stripe-Signature header is not one Stripe sends")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("the body is not what Stripe signed (not UTF-8)") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError:
            continue
    raise InvalidSignature("no configured secret signed this payload within the tolerance")


class Customer(msgspec.Struct, frozen=True):
    id: str


class CheckoutSession(msgspec.Struct, frozen=True):
    id: str
    url: str


class PortalSession(msgspec.Struct, frozen=True):
    url: str


class EventPage(msgspec.Struct, frozen=True):
    events: list[dict[str, Any]]
    has_more: bool


async def _gone_is_done(what: str, call: Awaitable[Any]) -> Any:
    """The answer of a call that removes something at Stripe; None when Stripe no longer has it
    (a rerun after a crash that came after Stripe's answer: removing it is done)."""
    try:
        return await call
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise _failed(what, exc) from None
    except stripe.StripeError as exc:
        raise _failed(what, exc) from None


def _failed(action: str, exc: stripe.StripeError) -> StripeUnavailable:
    kind = type(exc).__name__
    log.warning("stripe %s failed: %s (status %s, code %s)", action, kind, exc.http_status, exc.code)
    return StripeUnavailable(f"Stripe could not {action}: {kind}", stripe_code=exc.code)


class StripeGateway:
    """The calls billing makes, on one SDK client (async, over httpx)."""

    def __init__(self, api_key: str, api_base: str | None = None, *, timeout: float = 20.0,
                 max_network_retries: int = 2) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base} if api_base else None,
            http_client=self._http, max_network_retries=max_network_retries)

    async def close(self) -> None:
        await self._http.close_async()

    async def create_customer(self, tenant_id: uuid.UUID, name: str, idempotency_key: str) -> Customer:
        try:
            customer = await self._client.v1.customers.create_async(
                params={"name": name, "metadata": {"tenant_id": str(tenant_id)}},
                options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _failed("create the customer", exc) from None
        return Customer(id=customer.id)

    async def create_checkout_session(self, *, tenant_id: uuid.UUID, customer_id: str, price_id: str,
                                      success_url: str, cancel_url: str,
                                      idempotency_key: str) -> CheckoutSession:
        metadata = {"tenant_id": str(tenant_id)}
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params={"mode": "subscription", "customer": customer_id,
                        "line_items": [{"price": price_id, "quantity": 1}],
                        "client_reference_id": str(tenant_id), "metadata": metadata,
                        "subscription_data": {"metadata": metadata},
                        "success_url": success_url, "cancel_url": cancel_url},
                options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _failed("create the checkout session", exc) from None
        if not session.url:
            raise StripeUnavailable("Stripe answered a checkout session without a URL")
        return CheckoutSession(id=session.id, url=session.url)

    async def create_portal_session(self, *, customer_id: str, return_url: str,
                                    idempotency_key: str) -> PortalSession:
        try:
            session = await self._client.v1.billing_portal.sessions.create_async(
                params={"customer": customer_id, "return_url": return_url},
                options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            raise _failed("create the billing portal session", exc) from None
        return PortalSession(url=session.url)

    async def cancel_subscription(self, subscription_id: str, idempotency_key: str) -> str:
        subscription = await _gone_is_done("cancel the subscription", self._client.v1.subscriptions.cancel_async(
            subscription_id, options={"idempotency_key": idempotency_key}))
        return "missing" if subscription is None else str(subscription.status)

    async def delete_customer(self, customer_id: str, idempotency_key: str) -> str:
        """"deleted", or "missing" when Stripe no longer has it (a rerun after a crash that came
        after Stripe's answer). Stripe keeps a deleted customer retrievable by id, marked deleted."""
        deleted = await _gone_is_done("delete the customer", self._client.v1.customers.delete_async(
            customer_id, options={"idempotency_key": idempotency_key}))
        return "missing" if deleted is None else "deleted"

    async def list_events(self, *, created_from: int, starting_after: str | None = None,
                          limit: int = 100) -> EventPage:
        """One page of events created at or after `created_from` (Stripe lists newest first and
        keeps 30 days)."""
        params: dict[str, Any] = {"created": {"gte": created_from}, "limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        try:
            page = await self._client.v1.events.list_async(params=params)
        except stripe.StripeError as exc:
            raise _failed("list events", exc) from None
        return EventPage(events=[event.to_dict() for event in page.data], has_more=bool(page.has_more))
