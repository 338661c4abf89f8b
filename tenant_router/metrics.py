"""The router's Prometheus metrics, in a CollectorRegistry of its own (several applications in one
process keep separate counts). Requests, latency, pool waits and refusals are recorded as they
happen; connection and placement-cache figures are read from their stats sources at scrape time.

Labels are bounded: method (a fixed set), status, tier, server (host:port), code. The tenant id is
a label only with `RouterConfig.metrics_tenant_label` (one series per tenant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from litestar.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contracts.placement import Placement, PoolKey
from tenant_router.observability import method_label

PoolStatsSource = Callable[[], Mapping[str, Any]]  # PoolRegistry.stats
DirectoryStatsSource = Callable[[], Mapping[str, Any] | None]  # Directory.stats, None before the router starts
PLACEMENT_STATE = "tenantplane_placement"  # scope state: the placement a request named, once known
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def request_placement(scope: Scope) -> Placement | None:
    return scope.get("state", {}).get(PLACEMENT_STATE)


class _ScrapeTimeCollector(Collector):
    """Open connections and budgets by server, pool and cache counters: read when scraped."""

    def __init__(self, pool_stats: PoolStatsSource, directory_stats: DirectoryStatsSource) -> None:
        self.pool_stats = pool_stats
        self.directory_stats = directory_stats

    def describe(self) -> list[Metric]:
        return []  # nothing to check for name clashes at registration (the registry is ours)

    def collect(self) -> Iterator[Metric]:
        pools = self.pool_stats()
        open_ = GaugeMetricFamily("tenantplane_router_open_connections",
                                  "Connections this process holds open to a database server", labels=["server"])
        budget = GaugeMetricFamily("tenantplane_router_connection_budget",
                                   "Connections this process may open to a database server", labels=["server"])
        peak = GaugeMetricFamily("tenantplane_router_open_connections_peak",
                                 "Most connections held open at once to a database server", labels=["server"])
        waits = CounterMetricFamily("tenantplane_router_budget_waits",
                                    "Borrowers that had to wait for a slot of a server's budget", labels=["server"])
        for server, s in pools["servers"].items():
            open_.add_metric([server], s["open"])
            budget.add_metric([server], s["limit"])
            peak.add_metric([server], s["peak"])
            waits.add_metric([server], s["waits"])
        yield from (open_, budget, peak, waits)
        yield GaugeMetricFamily("tenantplane_router_pools", "Tenant pools open in this process", value=pools["pools"])
        yield CounterMetricFamily("tenantplane_router_connects", "Connections opened to tenant databases",
                                  value=pools["connects"])
        yield CounterMetricFamily("tenantplane_router_reclaims",
                                  "Idle connections closed to give their slot to another pool", value=pools["reclaims"])
        d = self.directory_stats()
        if d is None:  # the router has not started
            return
        hits = CounterMetricFamily("tenantplane_router_placement_cache_hits",
                                   "Placement lookups answered from a cache", labels=["layer"])
        hits.add_metric(["local"], d["hits"])
        hits.add_metric(["stale"], d["stale_hits"])  # answered past the TTL while refreshed in the background
        hits.add_metric(["redis"], d["redis_hits"])
        yield hits
        yield CounterMetricFamily("tenantplane_router_placement_cache_misses",
                                  "Placement lookups that read the catalog", value=d["misses"])
        yield GaugeMetricFamily("tenantplane_router_placement_cache_entries",
                                "Placements (and unknown names) cached in this process", value=d["entries"])
        yield CounterMetricFamily("tenantplane_router_placement_redis_errors",
                                  "Placement lookups for which Redis failed", value=d["redis_errors"])


class RouterMetrics:
    def __init__(self, pool_stats: PoolStatsSource, directory_stats: DirectoryStatsSource, *, tenant_label: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.tenant_label = tenant_label
        tenant = ("tenant",) if tenant_label else ()
        self.requests = Counter("tenantplane_router_requests", "Requests answered, by method, status and tier",
                                ("method", "status", "tier", *tenant), registry=self.registry)
        self.latency = Histogram("tenantplane_router_request_seconds",
                                 "Time from the first middleware to the last byte handed to the server",
                                 ("method", "tier", *tenant), registry=self.registry)
        self.pool_wait = Histogram("tenantplane_router_pool_wait_seconds",
                                   "Time to get a connection from the pool registry (served or refused)",
                                   ("server",), buckets=WAIT_BUCKETS, registry=self.registry)
        self.refused = Counter("tenantplane_router_refused",
                               "Requests answered with a router problem (gates, rate limits, unknown tenants), by code",
                               ("code", *tenant), registry=self.registry)
        self.registry.register(_ScrapeTimeCollector(pool_stats, directory_stats))
        self._request_children: dict[tuple, tuple[Any, Any]] = {}
        self._wait_children: dict[tuple[str, int], Any] = {}

    def _tenant(self, scope: Scope) -> tuple[str, ...]:
        if not self.tenant_label:
            return ()
        placement = request_placement(scope)
        return (str(placement.tenant_id) if placement is not None else "",)

    def observe_request(self, scope: Scope, status: int, seconds: float) -> None:
        placement = request_placement(scope)
        tier = placement.tier.value if placement is not None else "none"
        labels = (method_label(scope), status, tier, *self._tenant(scope))
        children = self._request_children.get(labels)
        if children is None:  # labels() takes a lock and builds a key: once per label set, not per request
            method, _, _, *tenant = labels
            children = self._request_children[labels] = (
                self.requests.labels(method, str(status), tier, *tenant),
                self.latency.labels(method, tier, *tenant))
        children[0].inc()
        children[1].observe(seconds)

    def observe_pool_wait(self, key: PoolKey, seconds: float) -> None:
        child = self._wait_children.get((key.host, key.port))
        if child is None:
            child = self._wait_children[(key.host, key.port)] = self.pool_wait.labels(f"{key.host}:{key.port}")
        child.observe(seconds)

    def count_refusal(self, scope: Scope, code: str) -> None:
        self.refused.labels(code, *self._tenant(scope)).inc()


def log_fields(scope: Scope) -> Mapping[str, Any]:
    """Tenant fields for the access log line, also for requests a gate refused."""
    placement = request_placement(scope)
    if placement is None:
        return {}
    return {"tenant_id": str(placement.tenant_id), "tenant_slug": placement.slug}
