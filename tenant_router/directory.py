"""Placements, as a named pair: `get_placement()` reads the catalog; `get_placement_cached()` answers
from an in-process TTL cache, then the shared Redis copy, then the catalog. Unknown tenants are
cached (locally) briefly too. Every catalog change that affects routing is announced (see
invalidation.py): the Redis copy is deleted and `listen_for_invalidations()` drops the local entry
at once; TTLs are only a backstop. With Redis down, lookups go on from the local cache and the
catalog.

Stale-while-revalidate: an entry past its TTL is still answered for `stale` more seconds while a
background refresh (one catalog query for all entries answered stale meanwhile) renews it, so a
hot tenant never waits on the catalog when its TTL runs out.
Only while this process is subscribed to invalidations (`listening`): then every change that
matters has already dropped the entry, and the TTL only guards against a lost message (a lost
subscription drops the whole cache when it comes back). Without a subscription, an expired entry
is looked up before it is answered, as before. The Redis copy lives `redis_ttl` seconds (longer
than the local TTL, since every invalidation deletes it), so other processes refresh from it.

Warm start: `preload(limit)` reads up to `limit` live tenants in one query (with their slugs,
ids and custom domains as keys) once this process is subscribed, so that a restarted router does
not send one catalog lookup per tenant, and tail tenants are local hits from their first request.
Invalidation finds a tenant's keys through an index, not by scanning the cache."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from contracts.channels import (
    INVALIDATION_CHANNEL,
    alias_redis_key,
    placement_redis_key,
)
from contracts.placement import Placement, TenantStatus
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
_MAX_UNKNOWN = 10_000  # "no such tenant" entries kept at most (random Host names must not fill memory)
_ALIAS_TTL = 3600  # slugs never change; a removed domain's alias is deleted by the control plane
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Placement)


class Directory:
    def __init__(self, catalog: asyncpg.Pool, ttl: float, negative_ttl: float, redis: Any = None, *,
                 stale: float = 0.0, redis_ttl: float | None = None) -> None:
        self.catalog = catalog
        self.redis = redis
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale = stale
        self.redis_ttl = max(1, int(redis_ttl if redis_ttl is not None else ttl))
        self.listening = False  # subscribed to invalidations right now (see listen_for_invalidations)
        self._cache: dict[TenantKey, tuple[float, Placement | None]] = {}
        self._keys_of: dict[str, set[TenantKey]] = {}  # tenant id -> its keys in _cache
        self._unknown: set[TenantKey] = set()  # keys cached as "no such tenant"
        self.preloaded = 0
        self._inflight: dict[TenantKey, asyncio.Future] = {}
        self._due: dict[TenantKey, uuid.UUID] = {}  # answered stale, to refresh (key -> tenant id)
        self._refresher: asyncio.Task | None = None
        self._generation = 0  # bumped by every invalidation
        self.coalesced = 0
        self.hits = 0
        self.stale_hits = 0
        self.refreshes = 0  # entries refreshed in the background behind stale answers
        self.refresh_errors = 0
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
        if entry is not None:
            if entry[0] > now:
                self.hits += 1
                return entry[1]
            if entry[1] is not None and self.listening and now < entry[0] + self.stale:
                self.stale_hits += 1
                self._due[key] = entry[1].tenant_id
                if self._refresher is None:
                    self._refresher = asyncio.create_task(self._refresh_due())
                return entry[1]
        # single flight: a burst of requests for a cold tenant makes one lookup, not one each
        pending = self._inflight.get(key)
        if pending is not None:
            self.coalesced += 1
            return await asyncio.shield(pending)
        return await self._single_flight(key, now)

    async def _single_flight(self, key: TenantKey, now: float) -> Placement | None:
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

    async def _refresh_due(self) -> None:
        """The background refresh behind stale answers: one catalog query for every entry that was
        answered stale meanwhile (a preloaded cache expires all at once), not one lookup each. On
        failure, or when an invalidation arrives meanwhile, the entries stay as they are until a
        later stale answer asks again or their stale window ends."""
        try:
            await asyncio.sleep(0.01)  # let the burst that found them stale add its keys
            while self._due:
                due, self._due = self._due, {}
                generation = self._generation
                try:
                    rows = await self.catalog.fetch(_SELECT + "WHERE t.id = ANY($1::uuid[])", list(set(due.values())))
                except Exception as exc:
                    self.refresh_errors += 1
                    log.debug("background placement refresh failed: %s", type(exc).__name__)
                    return
                if generation != self._generation:
                    continue
                found = {row["tenant_id"]: msgspec.convert(dict(row), Placement) for row in rows}
                now = time.monotonic()
                for key, tenant_id in due.items():
                    placement = found.get(tenant_id)
                    if key not in self._cache:
                        continue  # dropped meanwhile
                    if placement is None or (key.kind != "id" and placement.status is TenantStatus.deleted):
                        self._drop_key(key)  # a name of a deleted tenant may be taken again: look it up
                    else:
                        self._store(key, placement, now)
                    self.refreshes += 1
        finally:
            self._refresher = None

    async def _lookup(self, key: TenantKey, now: float) -> Placement | None:
        """Redis, then the catalog."""
        generation = self._generation
        placement = await self._from_redis(key)
        if placement is not None:
            self.redis_hits += 1
        else:
            self.misses += 1
            placement = await self.get_placement(key)
            await self._to_redis(key, placement)
        if generation == self._generation:  # an invalidation that arrived meanwhile wins
            self._store(key, placement, now)
        return placement

    def _store(self, key: TenantKey, placement: Placement | None, now: float) -> None:
        if placement is None and len(self._unknown) >= _MAX_UNKNOWN:
            for old in list(self._unknown):
                self._drop_key(old)
        self._cache[key] = (now + (self.ttl if placement else self.negative_ttl), placement)
        if placement is None:
            self._unknown.add(key)
        else:
            self._unknown.discard(key)
            self._keys_of.setdefault(str(placement.tenant_id), set()).add(key)

    def _drop_key(self, key: TenantKey) -> Placement | None:
        entry = self._cache.pop(key, None)
        self._unknown.discard(key)
        if entry is None or entry[1] is None:
            return None
        keys = self._keys_of.get(str(entry[1].tenant_id))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[str(entry[1].tenant_id)]
        return entry[1]

    async def preload(self, limit: int) -> int:
        """Cache up to `limit` live tenants (by slug, id and custom domain) in one catalog query.
        Skipped (returns 0) when an invalidation arrives meanwhile: the lookups then fill in."""
        if limit <= 0:
            return 0
        generation = self._generation
        rows = await self.catalog.fetch(_SELECT + "WHERE t.status <> 'deleted' ORDER BY t.id LIMIT $1", limit)
        placements = [msgspec.convert(dict(row), Placement) for row in rows]
        by_id = {p.tenant_id: p for p in placements}
        domains = await self.catalog.fetch(
            "SELECT domain, tenant_id FROM tenant_domains WHERE tenant_id = ANY($1::uuid[])", list(by_id))
        if generation != self._generation:
            return 0
        now = time.monotonic()
        for placement in placements:
            for key in (TenantKey("slug", placement.slug), TenantKey("id", str(placement.tenant_id))):
                if key not in self._cache:
                    self._store(key, placement, now)
        for row in domains:
            key = TenantKey("domain", row["domain"])
            if key not in self._cache:
                self._store(key, by_id[row["tenant_id"]], now)
        self.preloaded += len(placements)
        return len(placements)

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
                pipe.set(placement_redis_key(placement.tenant_id), _encoder.encode(placement), ex=self.redis_ttl)
                if key.kind != "id":
                    pipe.set(alias_redis_key(key.kind, key.value), str(placement.tenant_id), ex=_ALIAS_TTL)
                await pipe.execute()
        except Exception as exc:
            self._redis_failed(exc)

    def _redis_failed(self, exc: Exception) -> None:
        self.redis_errors += 1
        if self.redis_errors in (1, 10, 100) or self.redis_errors % 1000 == 0:
            log.warning("Redis unavailable for placements (%s); using the catalog", type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the background refresh, if one runs."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- invalidation ------------------------------------------------------------------------------
    def invalidate(self, tenant_id: str) -> None:
        """Drop the tenant's entries (`*`: all), and every "no such tenant" entry (the change may
        be that tenant's creation, or a slug or domain set free)."""
        self._generation += 1
        if tenant_id == "*":
            keys = list(self._cache)
        else:
            keys = [*self._keys_of.get(tenant_id, ()), *self._unknown, TenantKey("id", tenant_id)]
        for key in keys:
            placement = self._drop_key(key)
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
                self.listening = True
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
                self.listening = False
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def stats(self) -> dict[str, Any]:
        local = self.hits + self.stale_hits
        lookups = local + self.redis_hits + self.misses + self.coalesced
        return {"entries": len(self._cache), "preloaded": self.preloaded, "hits": self.hits, "stale_hits": self.stale_hits,
                "redis_hits": self.redis_hits, "misses": self.misses, "coalesced": self.coalesced,
                "hit_ratio": (local / lookups) if lookups else None, "redis_errors": self.redis_errors,
                "refreshes": self.refreshes, "refresh_errors": self.refresh_errors}
