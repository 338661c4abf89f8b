"""Placements, as a named pair: `get_placement()` reads the catalog (placement_source.py);
`get_placement_cached()` answers from the in-process cache (placement_cache.py), then the shared
Redis copy, then the catalog (placement_redis.py). Every routing change is announced: the Redis copy
is deleted and the invalidation listener drops the local entries at once; TTLs are a backstop.

While subscribed, an entry past its TTL is still answered for `stale` seconds while one background
query renews every entry answered stale meanwhile, so a hot tenant never waits on the catalog.
Without a subscription an expired entry is looked up first. `preload()` fills the cache with the
live fleet in one query, so a restarted router does not send one lookup per tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from contracts.placement import Placement, TenantStatus
from tenant_router.placement_cache import PlacementCache
from tenant_router.placement_redis import InvalidationListener, RedisPlacements
from tenant_router.placement_source import CatalogPlacements
from tenant_router.resolution import TenantKey

log = logging.getLogger("tenantplane.router.directory")


class LookupCounts(msgspec.Struct):
    """What the directory has answered, and from where (GET /-/router/stats, /metrics)."""

    preloaded: int = 0
    hits: int = 0  # answered from the local cache
    stale_hits: int = 0  # answered from the local cache past the TTL, refreshed in the background
    redis_hits: int = 0
    misses: int = 0  # read from the catalog
    coalesced: int = 0  # waited for a lookup of the same key already under way
    redis_errors: int = 0
    refreshes: int = 0  # entries renewed in the background behind stale answers
    refresh_errors: int = 0


class Directory:
    def __init__(self, catalog: asyncpg.Pool, ttl: float, negative_ttl: float, redis: Any = None, *,
                 stale: float = 0.0, redis_ttl: float | None = None) -> None:
        self.source = CatalogPlacements(catalog)
        self.cache = PlacementCache(ttl, negative_ttl)
        self._entries = self.cache.entries  # the hot path: one dict lookup, no method call
        self.redis_copy = None if redis is None else RedisPlacements(
            redis, redis_ttl if redis_ttl is not None else ttl, self._redis_failed)
        self.invalidations = InvalidationListener(self.invalidate)
        self.stale = stale
        self.counts = LookupCounts()
        self._inflight: dict[TenantKey, asyncio.Future] = {}
        self._due: dict[TenantKey, uuid.UUID] = {}  # answered stale, to refresh (key -> tenant id)
        self._refresher: asyncio.Task | None = None
        self._generation = 0  # bumped by every invalidation: a lookup under way then stores nothing
        self.on_drop: list[Callable[[Placement], None]] = []  # e.g. forget the dropped tenant's roles

    @property
    def listening(self) -> bool:
        """Subscribed to invalidations right now: only then may an entry be answered stale."""
        return self.invalidations.listening

    # -- the source --------------------------------------------------------------------------------
    async def get_placement(self, key: TenantKey) -> Placement | None:
        return await self.source.get(key)

    # -- the cached read ---------------------------------------------------------------------------
    async def get_placement_cached(self, key: TenantKey) -> Placement | None:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > now:
                self.counts.hits += 1
                return entry[1]
            if entry[1] is not None and self.invalidations.listening and now < entry[0] + self.stale:
                self.counts.stale_hits += 1
                self._due[key] = entry[1].tenant_id
                if self._refresher is None:
                    self._refresher = asyncio.create_task(self._refresh_due())
                return entry[1]
        # single flight: a burst of requests for a cold tenant makes one lookup, not one each
        pending = self._inflight.get(key)
        if pending is not None:
            self.counts.coalesced += 1
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

    async def _lookup(self, key: TenantKey, now: float) -> Placement | None:
        """Redis, then the catalog."""
        generation = self._generation
        placement = None if self.redis_copy is None else await self.redis_copy.get(key)
        if placement is not None:
            self.counts.redis_hits += 1
        else:
            self.counts.misses += 1
            placement = await self.get_placement(key)
            if self.redis_copy is not None and placement is not None:
                await self.redis_copy.put(key, placement)
        if generation == self._generation:  # an invalidation that arrived meanwhile wins
            self.cache.store(key, placement, now)
        return placement

    async def _refresh_due(self) -> None:
        """The background refresh behind stale answers: one catalog query for every entry answered
        stale meanwhile (a preloaded cache expires all at once). On failure, or when an
        invalidation arrives meanwhile, the entries stay as they are until a later stale answer
        asks again or their stale window ends."""
        try:
            await asyncio.sleep(0.01)  # let the burst that found them stale add its keys
            while self._due:
                due, self._due = self._due, {}
                generation = self._generation
                try:
                    found = await self.source.by_ids(due.values())
                except Exception as exc:
                    self.counts.refresh_errors += 1
                    log.debug("background placement refresh failed: %s", type(exc).__name__)
                    return
                if generation != self._generation:
                    continue
                now = time.monotonic()
                for key, tenant_id in due.items():
                    placement = found.get(tenant_id)
                    if key not in self.cache:
                        continue  # dropped meanwhile
                    if placement is None or (key.kind != "id" and placement.status is TenantStatus.deleted):
                        self.cache.drop(key)  # a name of a deleted tenant may be taken again: look it up
                    else:
                        self.cache.store(key, placement, now)
                    self.counts.refreshes += 1
        finally:
            self._refresher = None

    async def preload(self, limit: int) -> int:
        """Cache up to `limit` live tenants (by slug, id and custom domain) in one catalog query.
        Skipped (returns 0) when an invalidation arrives meanwhile: the lookups then fill in."""
        if limit <= 0:
            return 0
        generation = self._generation
        placements, domains = await self.source.live(limit)
        if generation != self._generation:
            return 0
        now = time.monotonic()
        for placement in placements:
            for key in (TenantKey("slug", placement.slug), TenantKey("id", str(placement.tenant_id))):
                if key not in self.cache:
                    self.cache.store(key, placement, now)
        for domain, placement in domains:
            key = TenantKey("domain", domain)
            if key not in self.cache:
                self.cache.store(key, placement, now)
        self.counts.preloaded += len(placements)
        return len(placements)

    def _redis_failed(self, exc: Exception) -> None:
        self.counts.redis_errors += 1
        errors = self.counts.redis_errors
        if errors in (1, 10, 100) or errors % 1000 == 0:
            log.warning("Redis unavailable for placements (%s); using the catalog", type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the background refresh, if one runs."""
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- invalidation ------------------------------------------------------------------------------
    def invalidate(self, tenant_id: str) -> None:
        """Drop the tenant's entries (`*`: all), and every "no such tenant" entry."""
        self._generation += 1
        for key in self.cache.keys_to_drop(tenant_id):
            placement = self.cache.drop(key)
            if placement is not None:
                for callback in self.on_drop:
                    callback(placement)

    async def listen_for_invalidations(self, redis: Any, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled, on a Redis client of its own (see InvalidationListener)."""
        await self.invalidations.run(redis, ready)

    def stats(self) -> dict[str, Any]:
        c = self.counts
        local = c.hits + c.stale_hits
        lookups = local + c.redis_hits + c.misses + c.coalesced
        return {"entries": len(self.cache), "preloaded": c.preloaded, "hits": c.hits, "stale_hits": c.stale_hits,
                "redis_hits": c.redis_hits, "misses": c.misses, "coalesced": c.coalesced,
                "hit_ratio": (local / lookups) if lookups else None, "redis_errors": c.redis_errors,
                "refreshes": c.refreshes, "refresh_errors": c.refresh_errors}
