"""The router object of one application process, and how a request finds it.

TenantRouter holds what every request shares (pools, placement directory, rate limiter, role
cache, metrics) and starts and stops it with the application's lifespan. `running(app, config)`
keeps it on the application's state under STATE_KEY; `router_of(app)` reads it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from litestar import Litestar

from tenant_router.config import RouterConfig
from tenant_router.directory import Directory
from tenant_router.memberships import RoleCache
from tenant_router.metrics import RouterMetrics
from tenant_router.pools import PoolRegistry
from tenant_router.ratelimit import TenantRateLimiter

log = logging.getLogger("tenantplane.router")

STATE_KEY = "tenant_router"


def router_of(app: Litestar) -> "TenantRouter":
    return getattr(app.state, STATE_KEY)


@contextlib.asynccontextmanager
async def running(app: Litestar, config: RouterConfig) -> AsyncIterator["TenantRouter"]:
    """The application's lifespan part: a started router on the app's state, stopped at the end."""
    router = TenantRouter(config)
    await router.start()
    setattr(app.state, STATE_KEY, router)
    try:
        yield router
    finally:
        await router.stop()


class TenantRouter:
    """The router's runtime state for one application process. `directory`, `limiter` and `roles`
    exist once `start()` has returned."""

    directory: Directory
    limiter: TenantRateLimiter
    roles: RoleCache

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.clock: Callable[[], float] = time.time  # wall time for the billing grace; tests move it
        self.pools = PoolRegistry(
            config.keys(), tenant_max_connections=config.tenant_max_connections,
            acquire_timeout=config.acquire_timeout_seconds, connect_timeout=config.connect_timeout_seconds,
            pool_idle_seconds=config.pool_idle_seconds, connection_idle_seconds=config.connection_idle_seconds,
            shared_pool_max_connections=config.shared_pool_max_connections)
        self.redis: Any = None
        self._catalog: asyncpg.Pool | None = None
        self._listener_client: Any = None
        self._tasks: list[asyncio.Task] = []  # the sweeper, the invalidation listener, the preload
        self.metrics = RouterMetrics(self.pools.stats, self.directory_stats, tenant_label=config.metrics_tenant_label)
        self.pools.on_wait = self.metrics.observe_pool_wait

    def directory_stats(self) -> dict[str, Any] | None:
        directory = getattr(self, "directory", None)
        return directory.stats() if directory is not None else None

    async def start(self) -> None:
        config = self.config
        self._catalog = await asyncpg.create_pool(
            config.catalog_dsn, min_size=1, max_size=5, timeout=config.catalog_connect_timeout_seconds,
            command_timeout=config.catalog_statement_timeout_seconds)
        if config.redis_url:
            import redis.asyncio as aioredis

            # short timeouts: with Redis down, routing goes on from the local cache and the catalog
            self.redis = aioredis.from_url(config.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self.directory = Directory(self._catalog, config.cache_ttl_seconds, config.negative_ttl_seconds,
                                   self.redis, stale=config.cache_stale_seconds, redis_ttl=config.redis_ttl_seconds)
        # the limiter shares the router's Redis connection pool (closed with the router)
        self.limiter = TenantRateLimiter(config.redis_url, getattr(self.redis, "connection_pool", None))
        self.roles = RoleCache(self._catalog)
        self.directory.on_drop.append(self.roles.drop)
        self._tasks.append(asyncio.create_task(self.pools.run_sweeper()))
        if self.redis is not None:
            import redis.asyncio as aioredis

            # the subscriber blocks on reads, so it gets a client of its own without a read timeout
            self._listener_client = aioredis.from_url(config.redis_url, socket_connect_timeout=0.5)
            ready = asyncio.Event()
            self._tasks.append(asyncio.create_task(
                self.directory.listen_for_invalidations(self._listener_client, ready)))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), 5)
        # after subscribing, so that no change made meanwhile is missed; in the background, so
        # that a large catalog does not hold the application's startup
        self._tasks.append(asyncio.create_task(self._warm_start()))

    async def _warm_start(self) -> None:
        try:
            count = await self.directory.preload(self.config.cache_preload_max)
            log.info("placement cache preloaded with %d tenants", count)
        except Exception as exc:  # lookups fill the cache one by one instead
            log.warning("placement preload failed (%s); continuing without", type(exc).__name__)

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        if getattr(self, "directory", None) is not None:
            await self.directory.aclose()
        await self.pools.close()
        for client in (self.redis, self._listener_client):
            if client is not None:
                await client.aclose()
        if self._catalog is not None:
            await self._catalog.close()
