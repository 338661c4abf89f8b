"""The router for any ASGI framework (Starlette, FastAPI, ...): a plain ASGI middleware and
`tenant_transaction()`. Litestar applications use the plugin (plugin.py) instead.

    app = FastAPI()
    app.add_middleware(TenantMiddleware, config=RouterConfig.from_env())

    async def db() -> AsyncIterator[asyncpg.Connection]:
        async with tenant_transaction() as conn:
            yield conn

Resolution and gates are admission.py's, as in the plugin; refusals are answered here as the same
problem details (the application's own handlers never run for them), and a RouterError its handler
raises (e.g. 503 `tenant_unavailable`) is answered as a problem too while no response has started.
The middleware starts the router on the ASGI lifespan's startup and stops it after shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import asyncpg
import structlog

from contracts.placement import Placement
from contracts.problems import PROBLEM_JSON, error_body
from tenant_router import binding
from tenant_router.admission import resolve_tenant, routing_headers, unrouted_matcher
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant, tenant_scope
from tenant_router.errors import FeatureNotEnabled, NoTenantScope, RouterError
from tenant_router.gates import BILLING_STATE, RATE_LIMIT_STATE
from tenant_router.metrics import log_fields
from tenant_router.observability import begin_request, response_hook
from tenant_router.runtime import TenantRouter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
State = MutableMapping[str, Any]

_router: ContextVar[TenantRouter | None] = ContextVar("tenantplane_asgi_router", default=None)


def serving_router() -> TenantRouter | None:
    """The router of the TenantMiddleware serving this task, if any."""
    return _router.get()


def current_router() -> TenantRouter:
    router = _router.get()
    if router is None:
        raise NoTenantScope("no TenantMiddleware is serving this task")
    return router


@contextlib.asynccontextmanager
async def tenant_transaction(placement: Placement | None = None) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction bound to the request's tenant (or `placement`): committed when
    the block ends, rolled back when it raises. The same transaction as the plugin's `db`."""
    router = current_router()
    async with binding.tenant_transaction(router.pools, placement or current_tenant(),
                                          router.config.budget_fraction) as conn:
        yield conn


def require_feature(feature: str) -> Callable[[], None]:
    """The plan gate for other frameworks: call it (or pass it to FastAPI's `Depends`); raises 403
    `feature_not_enabled` with `"upgrade": true` unless the tenant's plan includes `feature`."""

    def check() -> None:
        if feature not in current_tenant().features:
            raise FeatureNotEnabled(f"{feature!r} is not included in this tenant's plan", feature)

    check.__name__ = f"requires_feature_{feature}"
    return check


def _gate_headers(state: State) -> list[tuple[bytes, bytes]]:
    found: list[tuple[bytes, bytes]] = []
    for key in (RATE_LIMIT_STATE, BILLING_STATE):
        for name, value in (state.get(key) or {}).items():
            found.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return found


async def _send_problem(send: Send, error: RouterError, state: State) -> None:
    headers = [(b"content-type", PROBLEM_JSON.encode()), *_gate_headers(state)]
    given = {name for name, _ in headers}
    for name, value in (error.headers or {}).items():
        if name.lower().encode("latin-1") not in given:
            headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
    body = error_body(error)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TenantMiddleware:
    """Plain ASGI middleware: the request id, then (except on the unrouted paths) the tenant, resolved
    and gated; the rest of the request runs inside `tenant_scope()`, with `request_id`,
    `tenant_id` and `tenant_slug` bound for every log line. Give it a `config` (it owns and runs
    the router) or a started `router` of your own."""

    def __init__(self, app: ASGIApp, config: RouterConfig | None = None, *,
                 router: TenantRouter | None = None) -> None:
        if (config is None) == (router is None):
            raise ValueError("give TenantMiddleware either a config or a router")
        self.app = app
        self.router = router if router is not None else TenantRouter(config)  # type: ignore[arg-type]
        self._owns_router = router is None
        # what the plugin's before_send hook does: X-Request-ID, the access log line, request metrics
        self._observe = response_hook(self.router.metrics.observe_request, log_fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # this request's own copy of the lifespan state (as servers give it), since ours is per request
        scope["state"] = dict(scope.get("state") or {})
        tokens = dict(structlog.contextvars.bind_contextvars(request_id=begin_request(scope)))
        if kind == "http":
            send = self._observed(scope, send)
        router_token = _router.set(self.router)
        try:
            if unrouted_matcher(self.router.config.unrouted_paths).match(scope["path"]):
                await self.app(scope, receive, send)
                return
            await self._routed(scope, receive, send, tokens)
        finally:
            _router.reset(router_token)
            structlog.contextvars.reset_contextvars(**tokens)

    def _observed(self, scope: Scope, send: Send) -> Send:
        async def observed(message: Message) -> None:
            await self._observe(message, scope)
            await send(message)

        return observed

    async def _routed(self, scope: Scope, receive: Receive, send: Send, tokens: dict[str, Any]) -> None:
        state = scope["state"]
        try:
            placement = await resolve_tenant(self.router, routing_headers(scope), scope.get("method", "GET"), state)
        except RouterError as exc:
            await self._refuse(scope, send, exc)
            return
        tokens.update(structlog.contextvars.bind_contextvars(tenant_id=str(placement.tenant_id),
                                                             tenant_slug=placement.slug))
        started = False
        extra = _gate_headers(state)

        async def send_with_gates(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    present = {name.lower() for name, _ in message.get("headers", ())}
                    message["headers"] = [*message.get("headers", ()), *(h for h in extra if h[0] not in present)]
            await send(message)

        with tenant_scope(placement):
            try:
                await self.app(scope, receive, send_with_gates)
            except RouterError as exc:  # a handler's (e.g. its tenant database is down): still a problem
                if started:
                    raise
                await self._refuse(scope, send, exc)

    async def _refuse(self, scope: Scope, send: Send, error: RouterError) -> None:
        self.router.metrics.count_refusal(scope, error.code)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": error.code})
            return
        await _send_problem(send, error, scope["state"])

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the router before the application's own startup (which may use it) and stop it
        after the application's shutdown."""
        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self._owns_router:
                await self.router.start()
            return message

        async def send_and_stop(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed") and self._owns_router:
                await self.router.stop()
            await send(message)

        await self.app(scope, receive_and_start, send_and_stop)
