"""TenantRouterPlugin: resolves every request's tenant, gates it, and gives handlers a connection
that is already in a transaction for that tenant (the `db` dependency).

    app = Litestar(route_handlers=[...], plugins=[TenantRouterPlugin(RouterConfig.from_env())])

    @get("/api/things")
    async def things(db: asyncpg.Connection) -> list[dict]: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from litestar import Litestar, Request, Response
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp, Receive, Scope, Send

from contracts.placement import Placement
from tenant_router import resolution
from tenant_router.binding import tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant, tenant_scope
from tenant_router.directory import Directory
from tenant_router.errors import RouterError, TenantMismatch, TenantNotFound
from tenant_router.gates import admit, check_status, rate_limit_headers
from tenant_router.metrics import (
    PLACEMENT_STATE,
    RouterMetrics,
    log_fields,
    metrics_endpoint,
    stats_endpoint,
)
from tenant_router.observability import begin_request, response_hook
from tenant_router.pools import PoolRegistry
from tenant_router.problems import error_response

log = logging.getLogger("tenantplane.router")

STATE_KEY = "tenant_router"


class TenantRouter:
    """The router's runtime state for one application process."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.pools = PoolRegistry(
            config.secret_key, tenant_max_connections=config.tenant_max_connections,
            acquire_timeout=config.acquire_timeout_seconds, connect_timeout=config.connect_timeout_seconds,
            pool_idle_seconds=config.pool_idle_seconds, connection_idle_seconds=config.connection_idle_seconds,
            shared_pool_max_connections=config.shared_pool_max_connections)
        self._sweeper: asyncio.Task | None = None
        self.directory: Directory | None = None
        self._catalog: asyncpg.Pool | None = None
        self._redis: Any = None
        self._listener: asyncio.Task | None = None
        self._preload: asyncio.Task | None = None
        self._listener_client: Any = None
        self.extensions: dict[str, Any] = {}  # per-process state of gates (e.g. the rate limiter)
        self.metrics = RouterMetrics(self, tenant_label=config.metrics_tenant_label)
        self.pools.on_wait = self.metrics.observe_pool_wait

    async def start(self) -> None:
        self._catalog = await asyncpg.create_pool(self.config.catalog_dsn, min_size=1, max_size=5)
        if self.config.redis_url:
            import redis.asyncio as aioredis

            # short timeouts: with Redis down, routing goes on from the local cache and the catalog
            self._redis = aioredis.from_url(self.config.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self.directory = Directory(self._catalog, self.config.cache_ttl_seconds, self.config.negative_ttl_seconds,
                                   self._redis, stale=self.config.cache_stale_seconds,
                                   redis_ttl=self.config.redis_ttl_seconds)
        self._sweeper = asyncio.create_task(self.pools.run_sweeper())
        if self._redis is not None:
            import redis.asyncio as aioredis

            # the subscriber blocks on reads, so it gets a client of its own without a read timeout
            listener_client = aioredis.from_url(self.config.redis_url, socket_connect_timeout=0.5)
            self._listener_client = listener_client
            ready = asyncio.Event()
            self._listener = asyncio.create_task(self.directory.listen_for_invalidations(listener_client, ready))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), 5)
        # after subscribing, so that no change made meanwhile is missed; in the background, so
        # that a large catalog does not hold the application's startup
        self._preload = asyncio.create_task(self._warm_start())

    async def _warm_start(self) -> None:
        assert self.directory is not None
        try:
            count = await self.directory.preload(self.config.cache_preload_max)
            log.info("placement cache preloaded with %d tenants", count)
        except Exception as exc:  # lookups fill the cache one by one instead
            log.warning("placement preload failed (%s); continuing without", type(exc).__name__)

    async def stop(self) -> None:
        for task in (self._preload, self._listener, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.directory is not None:
            await self.directory.aclose()
        await self.pools.close()
        for client in (self._redis, self._listener_client):
            if client is not None:
                await client.aclose()
        if self._catalog is not None:
            await self._catalog.close()

    @property
    def redis(self) -> Any:
        return self._redis

    async def _host_matches(self, host_key: resolution.TenantKey, placement: Placement) -> bool:
        if host_key.kind == "slug":
            return host_key.value == placement.slug
        # a host outside the apex that is no tenant's domain is the application's own name
        by_host = await self.directory.get_placement_cached(host_key)  # type: ignore[union-attr]
        return by_host is None or by_host.tenant_id == placement.tenant_id

    async def resolve(self, headers: Mapping[str, str], method: str, state: dict[str, Any]) -> Placement:
        """The request's tenant, gated. Verified token claims are left in `state["auth_claims"]`.
        Unknown tenants, and tenants a caller may not see, answer alike (404)."""
        assert self.directory is not None
        host_key = resolution.key_from_host(headers.get("host"), self.config.apex)
        token = resolution.bearer_token(headers.get("authorization"))
        tenant_header = headers.get("x-tenant-id")
        if token is not None:
            claims = resolution.verified_claims(token, self.config)
            state["auth_claims"] = claims
            key = resolution.TenantKey("id", str(resolution.tenant_id_from_claims(claims)))
        elif tenant_header is not None:
            key = resolution.trusted_tenant(tenant_header, headers.get("x-service-token"), self.config)
        elif host_key is not None:
            key = host_key
        else:
            raise TenantNotFound("the request names no tenant (use {slug}.%s or a tenant token)" % self.config.apex)
        placement = await self.directory.get_placement_cached(key)
        if placement is None:
            raise TenantNotFound("no such tenant")
        if key is not host_key and host_key is not None and not await self._host_matches(host_key, placement):
            raise TenantMismatch("the credentials name another tenant than the host")
        state[PLACEMENT_STATE] = placement  # for metrics and the access log, also if a gate refuses
        check_status(placement, method)
        await admit(self, placement, state)
        return placement


_ROUTING_HEADERS = frozenset({b"host", b"authorization", b"x-tenant-id", b"x-service-token"})


def routing_headers(scope: Scope) -> dict[str, str]:
    """The headers resolution reads, in one pass over the raw ASGI list (names arrive lowercased);
    the first of repeated headers counts, as with Litestar's `Headers.get()`."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in _ROUTING_HEADERS:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


_UNROUTED_PATHS = re.compile(r"^/(?:health|schema|metrics|-/router)")  # the application's own endpoints


class TenantRequestMiddleware(ASGIMiddleware):
    """The router's one middleware: the request id (as observability.RequestContextMiddleware
    gives it), then, except on the application's own endpoints, the tenant, resolved and gated,
    with the rest of the request running inside `tenant_scope()`. `request_id`, `tenant_id` and
    `tenant_slug` are bound for every log line meanwhile. One middleware rather than two: every
    layer is paid on every request."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tokens = dict(structlog.contextvars.bind_contextvars(request_id=begin_request(scope)))
        try:
            if _UNROUTED_PATHS.match(scope["path"]):
                await next_app(scope, receive, send)
                return
            router: TenantRouter = getattr(scope["app"].state, STATE_KEY)
            placement = await router.resolve(routing_headers(scope), scope.get("method", "GET"), scope["state"])
            tokens.update(structlog.contextvars.bind_contextvars(tenant_id=str(placement.tenant_id),
                                                                 tenant_slug=placement.slug))
            with tenant_scope(placement):
                await next_app(scope, receive, send)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


async def provide_db(request: Request) -> AsyncGenerator[asyncpg.Connection, None]:
    """A connection in a transaction bound to the request's tenant: committed when the handler
    returns, rolled back when it raises."""
    router: TenantRouter = getattr(request.app.state, STATE_KEY)
    async with tenant_transaction(router.pools, current_tenant(), router.config.budget_fraction) as conn:
        yield conn


def provide_tenant() -> Placement:
    return current_tenant()


def router_problem(request: Request, exc: RouterError) -> Response:
    router: TenantRouter | None = getattr(request.app.state, STATE_KEY, None)
    if router is not None:
        router.metrics.count_refusal(request.scope, exc.code)
    return error_response(exc)


def _observe_request(scope: Scope, status: int, seconds: float) -> None:
    router: TenantRouter | None = getattr(scope["app"].state, STATE_KEY, None)
    if router is not None:
        router.metrics.observe_request(scope, status, seconds)


class TenantRouterPlugin(InitPluginProtocol):
    def __init__(self, config: RouterConfig) -> None:
        self.config = config

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        config = self.config

        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncIterator[None]:
            router = TenantRouter(config)
            await router.start()
            setattr(app.state, STATE_KEY, router)
            try:
                yield
            finally:
                await router.stop()

        app_config.lifespan.append(lifespan)
        app_config.middleware.append(TenantRequestMiddleware())
        app_config.route_handlers.extend([metrics_endpoint, stats_endpoint])
        app_config.dependencies["db"] = Provide(provide_db)
        app_config.dependencies["tenant"] = Provide(provide_tenant, sync_to_thread=False)
        app_config.exception_handlers[RouterError] = router_problem
        app_config.before_send.append(rate_limit_headers)
        app_config.before_send.append(response_hook(_observe_request, log_fields))
        return app_config


