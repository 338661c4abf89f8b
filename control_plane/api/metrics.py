"""The control plane's Prometheus metrics: requests and latency by route (never by tenant), and the
catalog's operations by state, counted when scraped. One CollectorRegistry per app."""

from __future__ import annotations

import asyncio
import logging

from litestar import Request, Response, get
from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control_plane.catalog.driver_sql import DriverSQL
from provisioning import queue
from tenant_router.observability import method_label, render_metrics

log = logging.getLogger("tenantplane.api.metrics")

OPERATION_STATES = ("queued", "running", "succeeded", "failed")


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("tenantplane_api_requests", "Requests answered, by method, route and status",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("tenantplane_api_request_seconds", "Request duration by method and route",
                                 ("method", "route"), registry=self.registry)
        self.operations = Gauge("tenantplane_api_operations", "Operations in the catalog, by state (at scrape time)",
                                ("state",), registry=self.registry)
        self.catalog_up = Gauge("tenantplane_api_catalog_up", "1 when the last scrape could read the catalog",
                                registry=self.registry)

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("path_template") or "unmatched"  # the template, so ids do not become labels
        method = method_label(scope)
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def refresh_operations(self, engine) -> None:
        try:
            async with asyncio.timeout(2):
                async with engine.connect() as conn:
                    found = await queue.count_by_state(DriverSQL(conn))
        except Exception as exc:  # a scrape must still answer with the request metrics
            log.warning("operations not counted: catalog unavailable (%s)", type(exc).__name__)
            self.catalog_up.set(0)
            return
        counts = {state: 0 for state in OPERATION_STATES}
        counts.update(found)
        for state, n in counts.items():
            self.operations.labels(state).set(n)
        self.catalog_up.set(1)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    metrics: ApiMetrics = request.app.state.metrics
    await metrics.refresh_operations(request.app.state.engine)
    body, content_type = render_metrics(metrics.registry, request.headers.get("accept"))
    return Response(content=body, media_type=content_type)
