"""TenantRouterPlugin: resolves every request's tenant, gates it, and gives handlers a connection
that is already in a transaction for that tenant (the `db` dependency).

    app = Litestar(route_handlers=[...], plugins=[TenantRouterPlugin(RouterConfig.from_env())])

    @get("/api/things")
    async def things(db: asyncpg.Connection) -> list[dict]: ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response
from litestar.config.app import AppConfig
from litestar.datastructures import Headers
from litestar.di import Provide
from litestar.middleware import ASGIMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.enums import ScopeType

from tenant_router import resolution
from tenant_router.binding import tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant, tenant_scope
from tenant_router.contracts import Placement
from tenant_router.directory import Directory
from tenant_router.errors import RouterError, TenantMismatch, TenantNotFound
from tenant_router.gates import admit, check_status
from tenant_router.pools import PoolRegistry

STATE_KEY = "tenant_router"


class TenantRouter:
    """The router's runtime state for one application process."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.pools = PoolRegistry(config.secret_key, config.pool_max_size, config.connect_timeout_seconds)
        self.directory: Directory | None = None
        self._catalog: asyncpg.Pool | None = None
        self._redis: Any = None
        self._listener: asyncio.Task | None = None
        self.extensions: dict[str, Any] = {}  # per-process state of gates (e.g. the rate limiter)

    async def start(self) -> None:
        self._catalog = await asyncpg.create_pool(self.config.catalog_dsn, min_size=1, max_size=5)
        self.directory = Directory(self._catalog, self.config.cache_ttl_seconds, self.config.negative_ttl_seconds)
        self.directory.on_drop.append(self._drop_pool)
        if self.config.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.config.redis_url)
            ready = asyncio.Event()
            self._listener = asyncio.create_task(self.directory.listen_for_invalidations(self._redis, ready))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ready.wait(), 5)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        await self.pools.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self._catalog is not None:
            await self._catalog.close()

    def _drop_pool(self, placement: Placement) -> None:
        if placement.host and placement.port and placement.database:
            self.pools.discard_database(placement.host, placement.port, placement.database)

    @property
    def redis(self) -> Any:
        return self._redis

    async def resolve(self, headers: Headers, method: str, state: dict[str, Any]) -> Placement:
        """The request's tenant, gated. Verified token claims are left in `state["auth_claims"]`."""
        assert self.directory is not None
        host_slug = resolution.slug_from_host(headers.get("host"), self.config.apex)
        token = resolution.bearer_token(headers.get("authorization"))
        if token is not None:
            claims = resolution.verified_claims(token, self.config.jwt_secret, self.config.jwt_leeway_seconds)
            state["auth_claims"] = claims
            tenant_id = resolution.tenant_id_from_claims(claims)
            placement = await self.directory.get_placement_cached(("id", str(tenant_id)))
            if placement is None:
                raise TenantNotFound("no such tenant")
            if host_slug is not None and host_slug != placement.slug:
                raise TenantMismatch("the token was issued for another tenant")
        elif host_slug is not None:
            placement = await self.directory.get_placement_cached(("slug", host_slug))
            if placement is None:
                raise TenantNotFound("no such tenant")
        else:
            raise TenantNotFound("the request names no tenant (use {slug}.%s or a tenant token)" % self.config.apex)
        check_status(placement, method)
        await admit(self, placement, state)
        return placement


class TenantResolutionMiddleware(ASGIMiddleware):
    """Resolves and gates the tenant, then runs the rest of the request inside `tenant_scope()`."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    exclude_path_pattern = ("^/health", "^/schema", "^/metrics")

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        router: TenantRouter = getattr(scope["app"].state, STATE_KEY)
        state = scope.setdefault("state", {})
        placement = await router.resolve(Headers.from_scope(scope), scope.get("method", "GET"), state)
        with tenant_scope(placement):
            await next_app(scope, receive, send)


async def provide_db(request: Request) -> AsyncGenerator[asyncpg.Connection, None]:
    """A connection in a transaction bound to the request's tenant: committed when the handler
    returns, rolled back when it raises."""
    router: TenantRouter = getattr(request.app.state, STATE_KEY)
    async with tenant_transaction(router.pools, current_tenant()) as conn:
        yield conn


def provide_tenant() -> Placement:
    return current_tenant()


def router_problem(_: Request, exc: RouterError) -> Response:
    body = {"type": f"urn:tenantplane:problem:{exc.code}", "title": exc.title, "status": exc.status,
            "detail": exc.detail, "code": exc.code}
    return Response(content=msgspec.json.encode(body), status_code=exc.status,
                    media_type="application/problem+json", headers=exc.headers or None)


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
        app_config.middleware.append(TenantResolutionMiddleware())
        app_config.dependencies["db"] = Provide(provide_db)
        app_config.dependencies["tenant"] = Provide(provide_tenant, sync_to_thread=False)
        app_config.exception_handlers[RouterError] = router_problem
        return app_config


