"""Every place a tenant lives, in one list: what the erasure saga (erasure.py) removes, what its
report names, and what the tests scan. A new place a tenant's data can reach gets a line here first.

Where each is found (the key names come from contracts/channels.py and tenant_router/ratelimit.py):
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from contracts.channels import alias_redis_key, placement_redis_key


class Place(msgspec.Struct, frozen=True):
    name: str  # as the erasure report names it
    where: str
    on_delete: str  # what DELETE /v1/tenants/{id} does to it
    on_erase: str  # what erasure does to it


PLACES: tuple[Place, ...] = (
    Place("database", "its database (dedicated), schema (schema) or rows (shared) on its server",
          "dropped", "dropped (by the delete that erasure requires first)"),
    Place("backups", "catalog rows in `backups` (manifest: table names, counts, checksums)",
          "kept until their retention ends", "deleted"),
    Place("store_objects", "backup objects and their `.sha256` sidecars under tenants/<id>/ in the store",
          "kept until their retention ends", "deleted"),
    Place("data_key", "wrapped data keys in `tenant_keys`; with BACKUP_KMS_KEY_PER_TENANT the tenant's KMS key "
          "(`tenant_kms_keys`, alias/tenantplane/<id>)", "kept (backups stay restorable)",
          "wrapped keys erased (crypto-shredding); the rows stay, keyless, as the record; the tenant's KMS key "
          "scheduled for deletion (BACKUP_KMS_DELETION_WINDOW_DAYS) and its alias deleted"),
    Place("redis", "placement copy, slug/domain aliases, rate-limit windows, in every router's local cache",
          "placement copy, aliases and rate-limit windows dropped, routers told",
          "every key naming the tenant deleted, routers told"),
    Place("stripe_customer", "the Stripe customer and subscription (tenants.stripe_*)",
          "subscription cancelled", "subscription cancelled, customer deleted (Stripe keeps it retrievable by id); "
          "with no STRIPE_API_KEY: not_configured, both stay"),
    Place("domains", "`tenant_domains` and pending claims in `domain_challenges`", "released", "released"),
    Place("memberships", "`memberships` (user links) and feature overrides", "kept", "deleted"),
    Place("audit", "`audit_log` rows of the tenant", "kept", "kept without personal data (slug, name, domain, user)"),
    Place("billing_records", "recorded Stripe events (`billing_events.payload`: the customer's email, name, "
          "address), dunning notices (`dunning_outbox`), announcement outbox rows naming its slug or domains",
          "kept", "event payloads replaced by {id, type, erased}, parked events naming its customer too; notices "
          "deleted; outbox rows without the names (a broadcast instead)"),
    Place("catalog", "the `tenants` row (slug, name, billing fields)", "status deleted, row kept",
          "replaced by a tombstone: id, tier and dates only; the slug becomes reusable"),
)

PLACE_NAMES = tuple(p.name for p in PLACES)

# audit details that name a person or the tenant (dropped on erasure; what was done stays)
PERSONAL_AUDIT_KEYS = ("slug", "name", "domain", "user_id", "email")

# the catalog tables that hold rows of a tenant, with the column that names it
CATALOG_TABLES: tuple[tuple[str, str], ...] = (
    ("tenants", "id"), ("placements", "tenant_id"), ("tenant_domains", "tenant_id"), ("domain_challenges", "tenant_id"),
    ("memberships", "tenant_id"),
    ("tenant_feature_overrides", "tenant_id"), ("backups", "tenant_id"), ("tenant_keys", "tenant_id"),
    ("operations", "tenant_id"), ("audit_log", "target_id"),
)


def store_prefix(tenant_id: uuid.UUID) -> str:
    """Every object of the tenant lives under this prefix (backups/kit.py: object_key)."""
    return f"tenants/{tenant_id}/"


def redis_keys_named(tenant_id: uuid.UUID) -> tuple[str, ...]:
    """The Redis keys whose name is known from the id alone."""
    return (placement_redis_key(tenant_id),)


def alias_keys(aliases: list[tuple[str, str]]) -> list[str]:
    return [alias_redis_key(kind, value) for kind, value in aliases]


async def redis_keys_of(redis: Any, tenant_id: uuid.UUID) -> list[str]:
    """Every Redis key of the tenant: those whose name holds its id (placement copy, rate-limit
    windows of `limits`: tenantplane:ratelimit:LIMITER/tenantplane/<id>/...), and the aliases
    whose value is its id (a slug or domain alias names the tenant only in its value)."""
    found: set[str] = set()
    async for raw in redis.scan_iter(match=f"tenantplane:*{tenant_id}*", count=500):
        found.add(raw.decode() if isinstance(raw, bytes) else raw)
    async for raw in redis.scan_iter(match="tenantplane:alias:*", count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        value = await redis.get(key)
        if value is not None and (value.decode() if isinstance(value, bytes) else value) == str(tenant_id):
            found.add(key)
    return sorted(found)


async def catalog_rows(catalog: Any, tenant_id: uuid.UUID) -> dict[str, int]:
    """How many rows each catalog table holds for the tenant (names are constants, not input)."""
    counts: dict[str, int] = {}
    for table, column in CATALOG_TABLES:
        value: Any = str(tenant_id) if column == "target_id" else tenant_id
        counts[table] = int(await catalog.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", value))
    return counts
