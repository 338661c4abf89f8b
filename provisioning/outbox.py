"""Webhook outboxes: catalog rows delivered to a URL, signed the way Stripe signs its webhooks so
receivers can reuse their code:

    Tenantplane-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>

Two outboxes share this: billing's dunning notices (`dunning_outbox`, to DUNNING_WEBHOOK_URL with
DUNNING_WEBHOOK_SECRET) and the lifecycle events (`tenant_events`, provisioning/events.py, to
EVENTS_WEBHOOK_URL with EVENTS_WEBHOOK_SECRET). Each names its own statements (`Outbox`); the
claiming, posting, signing and backoff are one code.

A round claims due rows by pushing their next attempt one lease ahead (SKIP LOCKED, so workers
share rows and never send one at the same time), posts each, and records the outcome: delivered
once (`delivered_at`, set only while still NULL), or the error and the next attempt after an
exponential backoff. A worker that dies after the receiver answered and before the record is made
sends the row again after the lease: receivers dedupe on the `id` (also `Tenantplane-Delivery`),
which never changes for a row. The URL and the secret are never logged (a URL may carry a token).

Events alone are also given up on: one the webhook takes (EVENTS_WEBHOOK_TYPES) that has had no
2xx within EVENTS_GIVE_UP_AFTER_HOURS is marked abandoned at its next due attempt instead of being
tried again (EventDelivery), so a dead receiver costs a bounded amount of work per event.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from provisioning import events
from provisioning.config import WorkerConfig

log = logging.getLogger("tenantplane.outbox")

SIGNATURE_HEADER = "Tenantplane-Signature"
DELIVERY_HEADER = "Tenantplane-Delivery"  # the row's id, the same on every attempt
LEASE_SECONDS = 60.0  # a claimed row is not claimed again before then (the post's timeout is less)
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 50

_CLAIM = (
    "UPDATE dunning_outbox SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) "
    "WHERE id IN (SELECT id FROM dunning_outbox WHERE delivered_at IS NULL AND next_attempt_at <= now() "
    "  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) "
    "RETURNING id, tenant_id, event_id, kind, payload::text AS payload, created_at, attempts")
_DELIVERED = ("UPDATE dunning_outbox SET delivered_at = now(), last_error = NULL "
              "WHERE id = $1 AND delivered_at IS NULL")
_FAILED = ("UPDATE dunning_outbox SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3) "
           "WHERE id = $1 AND delivered_at IS NULL")

_FORGET = "DELETE FROM dunning_outbox WHERE tenant_id = $1"


async def forget_dunning_notices(db: Any, tenant_id: Any) -> int:
    """Erasure (erasure_billing.py): an erased tenant's notices, sent or not, go; how many there were.
    `db` has asyncpg's execute (the erasure's transaction)."""
    status = await db.execute(_FORGET, tenant_id)
    return int(status.split()[-1])


class Notice(msgspec.Struct, kw_only=True):
    """The body a receiver gets."""

    id: int
    type: str  # dunning.payment_failed
    tenant_id: str
    event_id: str  # the Stripe event that caused it
    created: int
    attempt: int
    data: dict[str, Any]


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def backoff(attempts: int, base: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: base, 2 base, 4 base, ..."""
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, min(attempts - 1, 30)))


def _notice_body(row: Any) -> bytes:
    created: dt.datetime = row["created_at"]
    return msgspec.json.encode(Notice(
        id=row["id"], type=f"dunning.{row['kind']}", tenant_id=str(row["tenant_id"]), event_id=row["event_id"],
        created=int(created.timestamp()), attempt=row["attempts"], data=msgspec.json.decode(row["payload"])))


@dataclass(frozen=True)
class Outbox:
    """One outbox table's statements: claim ($1 rows, leased $2 seconds; rows with `id` and
    `attempts`), delivered ($1 the id), failed ($1 the id, $2 the error, $3 the backoff), and the
    body a claimed row is posted as."""

    name: str  # for the logs
    claim: str
    delivered: str
    failed: str
    body: Callable[[Any], bytes]


DUNNING = Outbox("dunning notice", _CLAIM, _DELIVERED, _FAILED, _notice_body)
EVENTS = Outbox("event", events.CLAIM, events.DELIVERED, events.FAILED, events.delivery_body)


class WebhookDelivery:
    def __init__(self, outbox: Outbox, catalog: Any, url: str, secret: str, *, retry_base_seconds: float = 5.0,
                 timeout: float = 10.0, lease_seconds: float = LEASE_SECONDS, claim_args: tuple[Any, ...] = ()) -> None:
        self.outbox = outbox
        self.claim_args = claim_args  # the outbox's own claim parameters, after $1 and $2
        self.catalog = catalog
        self.lease = max(lease_seconds, timeout)  # never claimed again while a post may still be going
        self.url, self._secret = url, secret
        self.retry_base = retry_base_seconds
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def deliver_due(self) -> tuple[int, int]:
        """One round: (delivered, failed)."""
        rows = await self.catalog.fetch(self.outbox.claim, BATCH, self.lease, *self.claim_args)
        delivered = failed = 0
        for row in rows:
            error = await self._post(row)
            if error is None:
                await self.catalog.execute(self.outbox.delivered, row["id"])
                delivered += 1
            else:
                await self.catalog.execute(self.outbox.failed, row["id"], error,
                                           backoff(row["attempts"], self.retry_base))
                log.warning("%s %s not delivered (attempt %d): %s", self.outbox.name, row["id"], row["attempts"],
                            error)
                failed += 1
        return delivered, failed

    async def _post(self, row: Any) -> str | None:
        body = self.outbox.body(row)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self._secret),
                   DELIVERY_HEADER: str(row["id"])}
        try:
            response = await self._http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__  # never the URL: it may hold a token
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"


class DunningDelivery(WebhookDelivery):
    def __init__(self, catalog: Any, url: str, secret: str, **options: Any) -> None:
        super().__init__(DUNNING, catalog, url, secret, **options)


class EventDelivery(WebhookDelivery):
    """Posts the events of `types` (EVENTS_WEBHOOK_TYPES; others are never sent) and gives up on one
    still undelivered `give_up_seconds` after it became pending (EVENTS_GIVE_UP_AFTER_HOURS):
    `abandoned`, reported to `on_abandoned` (the worker's counter), sent again only when an admin
    asks (POST /v1/events/{id}/redeliver)."""

    def __init__(self, catalog: Any, url: str, secret: str, *, types: Sequence[str] = events.EVENT_TYPES,
                 give_up_seconds: float = 72 * 3600.0, on_abandoned: Callable[[int], None] | None = None,
                 **options: Any) -> None:
        self.types, self.give_up_seconds = list(types), give_up_seconds
        self.on_abandoned = on_abandoned
        super().__init__(EVENTS, catalog, url, secret, claim_args=(self.types, give_up_seconds), **options)

    async def abandon_overdue(self) -> int:
        """Give up on the due events past their window (a batch at a time); returns how many."""
        total = 0
        while True:
            status = await self.catalog.execute(events.ABANDON, BATCH, self.types, self.give_up_seconds)
            gone = int(status.split()[-1])
            total += gone
            if gone < BATCH:
                break
        if total:
            log.warning("%d event(s) abandoned: not delivered within %.0f hours (POST /v1/events/{id}/redeliver "
                        "sends one again)", total, self.give_up_seconds / 3600)
            if self.on_abandoned is not None:
                self.on_abandoned(total)
        return total

    async def deliver_due(self) -> tuple[int, int]:
        await self.abandon_overdue()  # first, so a round never posts what waited too long
        return await super().deliver_due()


async def deliver_events_periodically(config: WorkerConfig, catalog: Any,
                                     on_abandoned: Callable[[int], None] | None = None) -> None:
    """Every `events_interval_seconds`, the due events posted to EVENTS_WEBHOOK_URL (those past
    their window given up, counted by `on_abandoned`); a round that fails is logged and the next one
    comes."""
    assert config.events_webhook_url and config.events_webhook_secret  # the duty is declared only then
    delivery = EventDelivery(catalog, config.events_webhook_url, config.events_webhook_secret,
                             retry_base_seconds=config.events_retry_base_seconds,
                             types=config.events_webhook_types or events.EVENT_TYPES,
                             give_up_seconds=config.events_give_up_after_hours * 3600, on_abandoned=on_abandoned)
    try:
        while True:
            try:
                while sum(await delivery.deliver_due()) >= BATCH:  # a backlog: the next batch at once
                    pass
            except Exception as exc:
                log.warning("event delivery failed: %s", type(exc).__name__)
            await asyncio.sleep(config.events_interval_seconds)
    finally:
        await delivery.aclose()
