"""Placements: `get_placement()` reads the catalog; `get_placement_cached()` answers from an
in-process TTL cache first. Misses (unknown tenants) are cached briefly too. Every catalog change
that affects routing is announced on Redis, and `listen_for_invalidations()` drops the entry at
once; the TTL is only a backstop for lost messages or Redis being down."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import asyncpg
import msgspec

from tenant_router.contracts import INVALIDATION_CHANNEL, Placement

log = logging.getLogger("tenantplane.router.directory")

_SELECT = """
SELECT t.id AS tenant_id, t.slug, t.status, t.tier, p.server_id, s.host, s.port,
       p.database_name AS database, p.role_name AS role, p.schema_name AS schema,
       coalesce(p.version, 0) AS version, t.plan, t.billing_status, pl.rate_limit_per_minute,
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

LookupKey = tuple[str, str]  # ("slug", "acme") or ("id", "<uuid>")


class Directory:
    def __init__(self, catalog: asyncpg.Pool, ttl: float, negative_ttl: float) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._cache: dict[LookupKey, tuple[float, Placement | None]] = {}
        self.hits = 0
        self.misses = 0
        self.on_drop: list = []  # callables taking the dropped Placement (e.g. close its pool)

    async def get_placement(self, key: LookupKey) -> Placement | None:
        kind, value = key
        if kind == "id":
            row = await self.catalog.fetchrow(_SELECT + "WHERE t.id = $1", uuid.UUID(value))
        else:
            row = await self.catalog.fetchrow(_SELECT + "WHERE t.slug = $1 AND t.status <> 'deleted'", value)
        return None if row is None else msgspec.convert(dict(row), Placement)

    async def get_placement_cached(self, key: LookupKey) -> Placement | None:
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None and entry[0] > now:
            self.hits += 1
            return entry[1]
        self.misses += 1
        placement = await self.get_placement(key)
        self._cache[key] = (now + (self.ttl if placement else self.negative_ttl), placement)
        return placement

    def invalidate(self, tenant_id: str) -> None:
        for key, (_, placement) in list(self._cache.items()):
            if tenant_id == "*" or placement is None or str(placement.tenant_id) == tenant_id \
                    or key == ("id", tenant_id):
                self._cache.pop(key, None)
                if placement is not None:
                    for callback in self.on_drop:
                        callback(placement)

    async def listen_for_invalidations(self, redis: Any, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled; reconnects after Redis errors (and drops the whole cache then,
        since messages may have been missed)."""
        while True:
            try:
                pubsub = redis.pubsub()
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                self.invalidate("*")
                if ready is not None:
                    ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.invalidate(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation listener lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
