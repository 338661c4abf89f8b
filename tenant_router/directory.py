"""Placements, as a named pair: `get_placement()` reads the catalog; `get_placement_cached()` answers
from an in-process TTL cache, then the shared Redis copy, then the catalog. Unknown tenants are
cached (locally) briefly too. Every catalog change that affects routing is announced (see
invalidation.py): the Redis copy is deleted and `listen_for_invalidations()` drops the local entry
at once; TTLs are only a backstop. With Redis down, lookups go on from the local cache and the
catalog."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from tenant_router.contracts import INVALIDATION_CHANNEL, Placement, TenantStatus, alias_redis_key, placement_redis_key
from tenant_router.resolution import TenantKey

log = logging.getLogger("tenantplane.router.directory")

_SELECT = """
SELECT t.id AS tenant_id, t.slug, t.status, t.tier, p.server_id, s.host, s.port,
       p.database_name AS database, p.role_name AS role, p.schema_name AS schema,
       coalesce(p.version, 0) AS version, coalesce(s.capacity_connections, 100) AS server_budget,
       p.tenant_revision, s.sslmode,
       t.plan, t.billing_status, pl.rate_limit_per_minute,
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
_ALIAS_TTL = 3600  # slugs never change; a removed domain's alias is deleted by the control plane
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Placement)


class Directory:
    def __init__(self, catalog: asyncpg.Pool, ttl: float, negative_ttl: float, redis: Any = None) -> None:
        self.catalog = catalog
        self.redis = redis
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._cache: dict[TenantKey, tuple[float, Placement | None]] = {}
        self._inflight: dict[TenantKey, asyncio.Future] = {}
        self._generation = 0  # bumped by every invalidation
        self.coalesced = 0
        self.hits = 0
        self.redis_hits = 0
        self.misses = 0
        self.redis_errors = 0
        self.on_drop: list[Callable[[Placement], None]] = []  # e.g. close the dropped placement's pool

    # -- the source --------------------------------------------------------------------------------
    async def get_placement(self, key: TenantKey) -> Placement | None:
        if key.kind == "id":
            try:
                uuid.UUID(key.value)
            except ValueError:
                return None
        row = await self.catalog.fetchrow(_SELECT + _WHERE[key.kind], key.value)
        return None if row is None else msgspec.convert(dict(row), Placement)

    # -- the cached read ---------------------------------------------------------------------------
    async def get_placement_cached(self, key: TenantKey) -> Placement | None:
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None and entry[0] > now:
            self.hits += 1
            return entry[1]
        # single flight: a burst of requests for a cold tenant makes one lookup, not one each
        pending = self._inflight.get(key)
        if pending is not None:
            self.coalesced += 1
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            placement = await self._lookup(key, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it; nobody else must log it
            raise
        else:
            future.set_result(placement)
            return placement
        finally:
            self._inflight.pop(key, None)

    async def _lookup(self, key: TenantKey, now: float) -> Placement | None:
        generation = self._generation
        placement = await self._from_redis(key)
        if placement is not None:
            self.redis_hits += 1
        else:
            self.misses += 1
            placement = await self.get_placement(key)
            await self._to_redis(key, placement)
        if generation == self._generation:  # an invalidation that arrived meanwhile wins
            self._cache[key] = (now + (self.ttl if placement else self.negative_ttl), placement)
        return placement

    async def _from_redis(self, key: TenantKey) -> Placement | None:
        if self.redis is None:
            return None
        try:
            tenant_id = key.value if key.kind == "id" else await self.redis.get(alias_redis_key(key.kind, key.value))
            if tenant_id is None:
                return None
            if isinstance(tenant_id, bytes):
                tenant_id = tenant_id.decode()
            raw = await self.redis.get(placement_redis_key(tenant_id))
        except Exception as exc:
            self._redis_failed(exc)
            return None
        if raw is None:
            return None
        placement = _decoder.decode(raw)
        if key.kind == "slug" and (placement.slug != key.value or placement.status is TenantStatus.deleted):
            return None  # a stale alias (the slug was freed and reused): ask the catalog
        return placement

    async def _to_redis(self, key: TenantKey, placement: Placement | None) -> None:
        if self.redis is None or placement is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(placement_redis_key(placement.tenant_id), _encoder.encode(placement), ex=int(self.ttl) or 1)
                if key.kind != "id":
                    pipe.set(alias_redis_key(key.kind, key.value), str(placement.tenant_id), ex=_ALIAS_TTL)
                await pipe.execute()
        except Exception as exc:
            self._redis_failed(exc)

    def _redis_failed(self, exc: Exception) -> None:
        self.redis_errors += 1
        if self.redis_errors in (1, 10, 100) or self.redis_errors % 1000 == 0:
            log.warning("Redis unavailable for placements (%s); using the catalog", type(exc).__name__)

    # -- invalidation ------------------------------------------------------------------------------
    def invalidate(self, tenant_id: str) -> None:
        self._generation += 1
        for key, (_, placement) in list(self._cache.items()):
            if tenant_id == "*" or placement is None or str(placement.tenant_id) == tenant_id \
                    or (key.kind == "id" and key.value == tenant_id):
                self._cache.pop(key, None)
                if placement is not None:
                    for callback in self.on_drop:
                        callback(placement)

    async def listen_for_invalidations(self, redis: Any, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled; reconnects after Redis errors (and drops the whole local cache
        then, since messages may have been missed)."""
        while True:
            pubsub = redis.pubsub()
            try:
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
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.redis_hits + self.misses + self.coalesced
        return {"entries": len(self._cache), "hits": self.hits, "redis_hits": self.redis_hits,
                "misses": self.misses, "coalesced": self.coalesced, "hit_ratio": (self.hits / lookups) if lookups else None,
                "redis_errors": self.redis_errors}
