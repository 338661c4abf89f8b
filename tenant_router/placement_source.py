"""Placements as the catalog holds them: one tenant by key, many by id, and the live fleet for a
warm start. The query also computes what the gates read (effective features, the plan's rate limit,
the billing status and its grace), so gating costs no second lookup."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg
import msgspec

from contracts.placement import Placement
from tenant_router.errors import CatalogUnavailable
from tenant_router.outages import unreachable
from tenant_router.resolution import TenantKey

_SELECT = """
SELECT t.id AS tenant_id, t.slug, t.status, t.tier, p.server_id, s.host, s.port,
       p.database_name AS database, p.role_name AS role, p.schema_name AS schema,
       coalesce(p.version, 0) AS version, coalesce(s.capacity_connections, 100) AS server_budget,
       p.tenant_revision, s.sslmode,
       t.plan, t.billing_status, t.billing_grace_until, pl.rate_limit_per_minute,
       ARRAY(
           SELECT f FROM unnest(coalesce(pl.features, '{}')) AS f
           WHERE NOT EXISTS (SELECT 1 FROM tenant_feature_overrides o
                             WHERE o.tenant_id = t.id AND o.feature = f AND NOT o.enabled)
           UNION
           SELECT o.feature FROM tenant_feature_overrides o WHERE o.tenant_id = t.id AND o.enabled
       ) AS features
FROM tenants t
LEFT JOIN plans pl ON pl.name = t.plan
LEFT JOIN placements p ON p.tenant_id = t.id
LEFT JOIN database_servers s ON s.id = p.server_id
"""

_WHERE = {
    "id": "WHERE t.id = $1::uuid",
    "slug": "WHERE t.slug = $1 AND t.status <> 'deleted'",
    "domain": "WHERE t.id = (SELECT tenant_id FROM tenant_domains WHERE domain = $1) AND t.status <> 'deleted'",
}


def _placement(row: asyncpg.Record) -> Placement:
    return msgspec.convert(dict(row), Placement)


class CatalogPlacements:
    def __init__(self, catalog: asyncpg.Pool) -> None:
        self.catalog = catalog

    async def get(self, key: TenantKey) -> Placement | None:
        if key.kind == "id":
            try:
                uuid.UUID(key.value)
            except ValueError:
                return None
        try:
            row = await self.catalog.fetchrow(_SELECT + _WHERE[key.kind], key.value)
        except Exception as exc:
            if unreachable(exc):  # 503 with Retry-After, bounded by the pool's catalog timeouts
                raise CatalogUnavailable("the tenant directory cannot be read right now") from None
            raise
        return None if row is None else _placement(row)

    async def by_ids(self, tenant_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Placement]:
        """One query for many tenants; the ones not found are left out."""
        rows = await self.catalog.fetch(_SELECT + "WHERE t.id = ANY($1::uuid[])", list(set(tenant_ids)))
        return {row["tenant_id"]: _placement(row) for row in rows}

    async def live(self, limit: int) -> tuple[list[Placement], list[tuple[str, Placement]]]:
        """Up to `limit` tenants that are not deleted, and their custom domains."""
        rows = await self.catalog.fetch(_SELECT + "WHERE t.status <> 'deleted' ORDER BY t.id LIMIT $1", limit)
        placements = [_placement(row) for row in rows]
        by_id = {p.tenant_id: p for p in placements}
        domains = await self.catalog.fetch(
            "SELECT domain, tenant_id FROM tenant_domains WHERE tenant_id = ANY($1::uuid[])", list(by_id))
        return placements, [(row["domain"], by_id[row["tenant_id"]]) for row in domains]
