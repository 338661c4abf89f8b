"""TenantRouterPlugin: resolves every request's tenant, gates it, and gives handlers a connection
that is already in a transaction for that tenant (the `db` dependency).

    app = Litestar(route_handlers=[...], plugins=[TenantRouterPlugin(RouterConfig.from_env())])

    @get("/api/things")
    async def things(db: asyncpg.Connection) -> list[dict]: ...
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from litestar import Litestar, Request, Response
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol
from litestar.types import Scope

from contracts.placement import Placement
from tenant_router.binding import tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant
from tenant_router.endpoints import metrics_endpoint, stats_endpoint
from tenant_router.errors import RouterError
from tenant_router.gates import rate_limit_headers
from tenant_router.metrics import log_fields
from tenant_router.middleware import TenantRequestMiddleware
from tenant_router.observability import response_hook
from tenant_router.problems import error_response
from tenant_router.runtime import STATE_KEY, TenantRouter, router_of, running


async def provide_db(request: Request) -> AsyncGenerator[asyncpg.Connection, None]:
    """A connection in a transaction bound to the request's tenant: committed when the handler
    returns, rolled back when it raises."""
    router = router_of(request.app)
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
            async with running(app, config):
                yield

        app_config.lifespan.append(lifespan)
        app_config.middleware.append(TenantRequestMiddleware())
        app_config.route_handlers.extend([metrics_endpoint, stats_endpoint])
        app_config.dependencies["db"] = Provide(provide_db)
        app_config.dependencies["tenant"] = Provide(provide_tenant, sync_to_thread=False)
        app_config.exception_handlers[RouterError] = router_problem
        app_config.before_send.append(rate_limit_headers)
        app_config.before_send.append(response_hook(_observe_request, log_fields))
        return app_config


