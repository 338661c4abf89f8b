"""Erasing a deleted tenant, as an operation (`erase_tenant`):

    take_inventory → delete_backup_objects → destroy_data_keys → schedule_kms_key_deletion
    → purge_redis_keys → delete_stripe_customer (erasure_stripe.py)
    → scrub_billing_records (erasure_billing.py) → tombstone_catalog

The tenant is deleted first (its database, schema or rows are gone, its domains released): erasure
removes what a delete keeps on purpose, so that an accidental delete can be undone, and what names
the tenant. `take_inventory` counts every place (inventory.py) once, into the operation's params,
so the report says what was there even when a later step is rerun after a crash and finds nothing
left. Each step records its place in `tenant_erasures.places` (the report) and is idempotent: it
deletes what is still there, and a place already empty is simply recorded again with the counts
taken first. The finish marks the erasure completed in the statement that ends the operation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from provisioning import events, inventory, queue
from provisioning.announcements import redis_client
from provisioning.backups.kit import BackupKit
from provisioning.context import StepContext
from provisioning.erasure_billing import customer_note, scrub_billing_records
from provisioning.erasure_kms import schedule_kms_key_deletion
from provisioning.erasure_stripe import delete_stripe_customer
from provisioning.steps.catalog import CatalogChange

FINISH = CatalogChange("complete_erasure", (
    "erased AS (UPDATE tenant_erasures SET completed_at = coalesce(completed_at, now()) WHERE tenant_id = $3)",
))


def _kit(ctx: StepContext) -> BackupKit:
    return ctx.backups


async def _record(ctx: StepContext, place: str, entry: dict[str, Any]) -> None:
    """One place of the report: what was removed and when (replaced by a rerun, with the same counts)."""
    await ctx.catalog.execute(
        "UPDATE tenant_erasures SET places = places || jsonb_build_object($2::text, "
        "  $3::jsonb || jsonb_build_object('at', now())) WHERE tenant_id = $1",
        ctx.tenant_id, place, msgspec.json.encode(entry).decode())


async def _object_keys(ctx: StepContext) -> list[str]:
    """The tenant's objects: those the store lists under its prefix and those backups rows name."""
    listed = {o.key for o in await _kit(ctx).store.list(inventory.store_prefix(ctx.tenant_id))}
    rows = await ctx.catalog.fetch("SELECT object_key FROM backups WHERE tenant_id = $1 AND object_key IS NOT NULL",
                                   ctx.tenant_id)
    return sorted(listed | {r["object_key"] for r in rows})


async def _redis_keys(ctx: StepContext) -> list[str]:
    if not ctx.redis_url:
        return []
    redis = redis_client(ctx.redis_url)
    try:
        return await inventory.redis_keys_of(redis, ctx.tenant_id)
    finally:
        await redis.aclose()


async def take_inventory(ctx: StepContext) -> None:
    """Count every place once; a rerun keeps the first counts."""
    if "inventory" in ctx.params:
        return
    keys = await ctx.catalog.fetch("SELECT wrapper_kind, destroyed_at FROM tenant_keys WHERE tenant_id = $1",
                                   ctx.tenant_id)
    counts = await inventory.catalog_rows(ctx.catalog, ctx.tenant_id)
    customer = await ctx.catalog.fetchval("SELECT stripe_customer_id FROM tenants WHERE id = $1", ctx.tenant_id)
    found = {
        "backups": counts["backups"],
        "store_objects": len(await _object_keys(ctx)),
        "data_key_versions": sum(1 for k in keys if k["destroyed_at"] is None),
        "data_key_wrappers": sorted({k["wrapper_kind"] for k in keys}),
        "redis_keys": len(await _redis_keys(ctx)),
        "domains": counts["tenant_domains"] + counts["domain_challenges"],
        "memberships": counts["memberships"],
        "feature_overrides": counts["tenant_feature_overrides"],
        "audit_entries": counts["audit_log"],
        "stripe_customer": customer is not None,
    }
    ctx.params["inventory"] = found
    ctx.params.update(customer_note(customer))  # the Stripe step forgets it; the billing scrub needs it
    await queue.save_params(ctx.catalog, ctx.operation_id, {"inventory": found, **customer_note(customer)})


async def delete_backup_objects(ctx: StepContext) -> None:
    """Every object (and its digest sidecar: the store's delete takes both), then the backups rows."""
    for key in await _object_keys(ctx):
        await _kit(ctx).store.delete(key)
    await ctx.catalog.execute("DELETE FROM backups WHERE tenant_id = $1", ctx.tenant_id)
    found = ctx.params["inventory"]
    remains = ("none in the store; an S3 bucket with versioning keeps noncurrent versions until its "
               "lifecycle rule expires them" if _kit(ctx).store.kind == "s3" else "none")
    await _record(ctx, "backups", {"removed": found["backups"]})
    await _record(ctx, "store_objects", {"removed": found["store_objects"], "sidecars_removed": found["store_objects"],
                                         "store": _kit(ctx).store.kind, "remains": remains})


async def destroy_data_keys(ctx: StepContext) -> None:
    """Crypto-shredding (keys.py `destroy`): every wrapped copy in the catalog is erased, so a copy of
    an object kept anywhere (a bucket's old versions, a download) can no longer be decrypted. The
    master key (local file or the one KMS key) is shared by every tenant and is not touched."""
    await _kit(ctx).keys.destroy(ctx.tenant_id)
    found = ctx.params["inventory"]
    await _record(ctx, "data_key", {
        "removed": found["data_key_versions"], "wrappers": found["data_key_wrappers"],
        "kms_deletion_date": None,  # a tenant's own KMS key: schedule_kms_key_deletion (erasure_kms.py)
        "remains": "erased key bytes in dead catalog row versions until VACUUM, and in catalog backups "
                   "and WAL archives until they expire"})


async def purge_redis_keys(ctx: StepContext) -> None:
    """Every key naming the tenant (placement copy, aliases, rate-limit windows), then routers told
    (the announcement drops their local copies)."""
    keys = await _redis_keys(ctx)
    if keys:
        redis = redis_client(ctx.redis_url)  # type: ignore[arg-type]
        try:
            await redis.delete(*keys)
        finally:
            await redis.aclose()
    await ctx.announce(ctx.tenant_id)
    await _record(ctx, "redis", {"removed": ctx.params["inventory"]["redis_keys"],
                                 "configured": bool(ctx.redis_url)})


# audit details naming a person or the tenant are dropped; the action, actor and time stay
_SCRUB_AUDIT = "UPDATE audit_log SET details = details - $2::text[] WHERE target_id = $1 AND details ?| $2::text[]"


async def tombstone_catalog(ctx: StepContext) -> None:
    """In one transaction: the tenants row keeps its id, tier, status and dates only (the slug is
    replaced by the id, so the old slug is free for reuse; the name is emptied), user links, domains
    and feature overrides go, and the audit entries lose what names someone."""
    tid = ctx.tenant_id
    async with ctx.catalog.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE tenants SET slug = id::text, name = '', plan = NULL, pending_tier = NULL, "
                           "updated_at = now() WHERE id = $1", tid)
        await conn.execute("DELETE FROM memberships WHERE tenant_id = $1", tid)
        await conn.execute("DELETE FROM tenant_domains WHERE tenant_id = $1", tid)
        await conn.execute("DELETE FROM domain_challenges WHERE tenant_id = $1", tid)
        await conn.execute("DELETE FROM tenant_feature_overrides WHERE tenant_id = $1", tid)
        await conn.execute(_SCRUB_AUDIT, str(tid), list(inventory.PERSONAL_AUDIT_KEYS))
        scrubbed_events = await events.scrub_tenant(conn, tid)
    found = ctx.params["inventory"]
    await _record(ctx, "domains", {"removed": found["domains"]})
    await _record(ctx, "memberships", {"removed": found["memberships"], "feature_overrides": found["feature_overrides"]})
    await _record(ctx, "audit", {"kept": found["audit_entries"], "scrubbed": list(inventory.PERSONAL_AUDIT_KEYS),
                                 "lifecycle_events_without_slug": scrubbed_events})
    await _record(ctx, "catalog", {"removed": ["slug", "name", "plan"], "kept": ["id", "tier", "status", "dates"]})


async def erasure_failed(conn: Any, ctx: StepContext) -> None:
    """The tenant stays deleted; the erasure stays requested, not completed (asked again, it reruns)."""
    return None


STEPS = (take_inventory, delete_backup_objects, destroy_data_keys, schedule_kms_key_deletion, purge_redis_keys,
         delete_stripe_customer, scrub_billing_records, tombstone_catalog)


