"""Billing's periodic catalog work, run by the workers (it needs no Stripe call and no tenant
database, only the catalog):

- `suspend_overdue`: a tenant still past due BILLING_SUSPEND_AFTER_DAYS after its first unpaid
  failure is suspended, recorded as a one-step suspend operation (reason `payment_overdue`) like
  an admin's, with an audit row; `invoice.paid` resumes it (control_plane/billing/service.py).
- `queue_pending_tiers`: a plan change that asked for another tier while the tenant had an open
  operation left `tenants.pending_tier`; once the tenant is active and idle, its move is queued.

Each round is one transaction whose tenant rows are locked with SKIP LOCKED, so workers running it
at once share the work, and a billing event applying to the same tenant waits for it (or it for
the event): a payment and the suspension never cross.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

import msgspec

from provisioning import announcement_outbox, queue
from provisioning.announcements import announce_placement_change
from provisioning.config import WorkerConfig
from provisioning.outbox import DunningDelivery

log = logging.getLogger("tenantplane.dunning")

# the reasons billing suspends with; only these are lifted by a payment
BILLING_SUSPENSIONS = frozenset({"payment_overdue", "subscription_deleted"})
BATCH = 100
ACTOR = "billing"

_OVERDUE = (
    "SELECT t.id FROM tenants t WHERE t.billing_status = 'past_due' AND t.status = 'active' "
    f"AND t.past_due_since <= $1 AND {queue.no_open_operation('t.id')} "
    "ORDER BY t.past_due_since LIMIT $2 FOR UPDATE OF t SKIP LOCKED")
_PENDING = (
    "SELECT t.id, t.pending_tier, t.tier FROM tenants t WHERE t.pending_tier IS NOT NULL AND t.status = 'active' "
    f"AND {queue.no_open_operation('t.id')} ORDER BY t.id LIMIT $1 FOR UPDATE OF t SKIP LOCKED")
_AUDIT = ("INSERT INTO audit_log (actor, action, target_type, target_id, details) "
          "VALUES ($1, $2, 'tenant', $3, $4::jsonb)")


async def _audit(conn: Any, action: str, tenant_id: uuid.UUID, **details: Any) -> None:
    await conn.execute(_AUDIT, ACTOR, action, str(tenant_id), msgspec.json.encode(details).decode())


async def suspend_overdue(catalog: Any, suspend_after_days: int, now: dt.datetime) -> list[uuid.UUID]:
    """Suspend up to BATCH tenants unpaid since `now - suspend_after_days` (an injected clock in
    tests); the ids suspended, to be announced after the commit."""
    cutoff = now - dt.timedelta(days=suspend_after_days)
    async with catalog.acquire() as conn, conn.transaction():
        ids = [row["id"] for row in await conn.fetch(_OVERDUE, cutoff, BATCH)]
        for tenant_id in ids:
            await conn.execute("UPDATE tenants SET status = 'suspended', updated_at = now() WHERE id = $1", tenant_id)
            await queue.record_done(conn, uuid.uuid4(), "suspend_tenant", tenant_id, "set_status",
                                    {"reason": "payment_overdue"})
            await _audit(conn, "billing.dunning_suspend", tenant_id, suspend_after_days=suspend_after_days)
    return ids


async def queue_pending_tiers(catalog: Any) -> list[uuid.UUID]:
    """Queue the moves plan changes left pending; a tenant already on the tier just forgets it."""
    queued = []
    async with catalog.acquire() as conn, conn.transaction():
        for row in await conn.fetch(_PENDING, BATCH):
            await conn.execute("UPDATE tenants SET pending_tier = NULL WHERE id = $1", row["id"])
            if row["pending_tier"] == row["tier"]:
                continue
            op = queue.NewOperation(id=uuid.uuid4(), tenant_id=row["id"], params={"tier": row["pending_tier"]})
            await queue.enqueue(conn, "move_tenant", op)
            await _audit(conn, "billing.plan_tier_move", row["id"], tier=row["pending_tier"], operation_id=str(op.id))
            queued.append(row["id"])
    return queued


async def run_round(catalog: Any, config: WorkerConfig, redis: Any, delivery: DunningDelivery | None,
                    now: dt.datetime | None = None) -> None:
    """One round of each billing duty; `now` is the clock the suspension reads (a test's)."""
    now = dt.datetime.now(dt.UTC) if now is None else now
    for tenant_id in await suspend_overdue(catalog, config.billing_suspend_after_days, now):
        log.info("tenant %s suspended: still past due after %d days", tenant_id, config.billing_suspend_after_days)
        await announce_placement_change(redis, tenant_id, outbox=announcement_outbox.CatalogOutbox(catalog))
    await queue_pending_tiers(catalog)
    if delivery is not None:
        await delivery.deliver_due()


async def billing_periodically(config: WorkerConfig, catalog: Any) -> None:
    """Every `billing_interval_seconds`. A round that fails is logged and the next one comes; the
    Redis client (for announcing suspensions) is this duty's own."""
    redis = None
    if config.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(config.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
    delivery = None
    if config.dunning_webhook_url and config.dunning_webhook_secret:
        delivery = DunningDelivery(catalog, config.dunning_webhook_url, config.dunning_webhook_secret,
                                   retry_base_seconds=config.dunning_retry_base_seconds)
    try:
        while True:
            try:
                await run_round(catalog, config, redis, delivery)
            except Exception as exc:
                log.warning("billing duties failed: %s", type(exc).__name__)
            await asyncio.sleep(config.billing_interval_seconds)
    finally:
        if delivery is not None:
            await delivery.aclose()
        if redis is not None:
            await redis.aclose()
