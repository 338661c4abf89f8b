"""A worker's Prometheus metrics (prometheus-client), one CollectorRegistry per worker: the queue's
depth by kind and state (refreshed by a duty, so a scrape never waits on the catalog), operation and
step durations, failures and retries, spares per server, announcements waiting in the outbox, lifecycle events given up.
Labels are kinds, steps and server names, never tenants."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from provisioning import queue

log = logging.getLogger("tenantplane.worker")

DEPTH_EVERY = 5.0  # seconds between refreshes of the queue depth
_DURATIONS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.queue_depth = Gauge("tenantplane_worker_queue_depth", "Open operations in the catalog, by kind and state",
                                 ("kind", "state"), registry=r)
        self.operation_seconds = Histogram("tenantplane_worker_operation_seconds",
                                           "Operations run to their end by this worker, by kind and outcome",
                                           ("kind", "outcome"), buckets=_DURATIONS, registry=r)
        self.step_seconds = Histogram("tenantplane_worker_step_seconds", "Step attempts by kind, step and outcome",
                                      ("kind", "step", "outcome"), buckets=_DURATIONS, registry=r)
        self.failures = Counter("tenantplane_worker_operation_failures", "Operations that failed (retries exhausted)",
                                ("kind",), registry=r)
        self.retries = Counter("tenantplane_worker_step_retries", "Step attempts that failed and were retried later",
                               ("kind", "step"), registry=r)
        self.spares = Gauge("tenantplane_worker_spare_databases", "Spare databases per server at the last refill",
                            ("server",), registry=r)
        self.announcements_waiting = Gauge(
            "tenantplane_worker_announcements_waiting",
            "Routing announcements in the catalog's outbox, waiting for Redis (after this worker's last delivery round)",
            registry=r)
        self.events_abandoned = Counter(
            "tenantplane_worker_events_abandoned",
            "Lifecycle events this worker gave up delivering (EVENTS_GIVE_UP_AFTER_HOURS passed without a 2xx)",
            registry=r)
        self.catalog_up = Gauge("tenantplane_worker_catalog_up", "1 when the worker's last round reached the catalog",
                                registry=r)

    def set_spares(self, counts: dict[str, int]) -> None:
        for server, n in counts.items():
            self.spares.labels(server).set(n)

    async def refresh_depth(self, catalog: asyncpg.Pool) -> None:
        depth = await queue.open_depth(catalog)
        self.queue_depth.clear()  # kinds that drained report nothing rather than a stale count
        for kind, state, n in depth:
            self.queue_depth.labels(kind, state).set(n)

    async def keep_depth(self, catalog: asyncpg.Pool, interval: float = DEPTH_EVERY) -> None:
        """The duty behind tenantplane_worker_queue_depth."""
        while True:
            try:
                await self.refresh_depth(catalog)
            except Exception as exc:  # the catalog is away: the loop's own state says so
                log.debug("queue depth not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(interval)
