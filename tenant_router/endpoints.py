"""The router's two read-only endpoints, outside tenant resolution.

    GET /metrics            Prometheus text (or OpenMetrics, by Accept), no credential
    GET /-/router/stats     pool and placement-cache statistics as JSON; needs X-Service-Token
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from tenant_router.errors import ServiceTokenRequired
from tenant_router.observability import render_metrics
from tenant_router.resolution import is_service_token
from tenant_router.runtime import router_of


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request) -> Response:
    body, content_type = render_metrics(router_of(request.app).metrics.registry, request.headers.get("accept"))
    return Response(content=body, media_type=content_type)


@get("/-/router/stats", include_in_schema=False, sync_to_thread=False)
def stats_endpoint(request: Request) -> dict[str, Any]:
    router = router_of(request.app)
    if not is_service_token(request.headers.get("x-service-token"), router.config):
        raise ServiceTokenRequired("this endpoint needs a service credential in X-Service-Token")
    return {"pools": router.pools.stats(), "directory": router.directory_stats()}
