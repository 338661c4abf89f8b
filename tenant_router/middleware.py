"""The router's one middleware: every request's tenant, resolved and gated, with the rest of the
request running inside `tenant_scope()`."""

from __future__ import annotations

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from tenant_router.admission import resolve_tenant, routing_headers, unrouted_matcher
from tenant_router.context import tenant_scope
from tenant_router.observability import begin_request
from tenant_router.runtime import router_of


class TenantRequestMiddleware(ASGIMiddleware):
    """The request id (as observability.RequestContextMiddleware gives it), then, except on the
    application's own endpoints, the tenant. `request_id`, `tenant_id` and `tenant_slug` are bound
    for every log line meanwhile. One middleware rather than two: every layer is paid on every
    request."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        tokens = dict(structlog.contextvars.bind_contextvars(request_id=begin_request(scope)))
        try:
            router = router_of(scope["app"])
            if unrouted_matcher(router.config.unrouted_paths).match(scope["path"]):
                await next_app(scope, receive, send)
                return
            placement = await resolve_tenant(router, routing_headers(scope),
                                             scope.get("method", "GET"), scope["state"])
            tokens.update(structlog.contextvars.bind_contextvars(tenant_id=str(placement.tenant_id),
                                                                 tenant_slug=placement.slug))
            with tenant_scope(placement):
                await next_app(scope, receive, send)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
