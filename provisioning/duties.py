"""A worker's periodic duties, each declared with what happens when it dies, and `supervise()`, which
runs one under the worker's TaskGroup: it logs a death and starts the duty again after a pause, or
lets it be, as declared. A duty that returns has done its job."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from contracts import locks
from provisioning import announcement_outbox, drill_schedule, kms_leftovers, login_drift, retention, rounds, schedules
from provisioning.backups.kit import store_url
from provisioning.backups.objects import BackupStore
from provisioning.backups.store import open_store
from provisioning.backups.tenant_kms import TenantKmsKeys
from provisioning.config import WorkerConfig
from provisioning.dunning import billing_periodically
from provisioning.metrics import WorkerMetrics
from provisioning.outbox import deliver_events_periodically
from provisioning.reconcile import reconcile_and_store
from provisioning.runner import describe
from provisioning.sealing import SecretBox
from provisioning.spares import keep_spares
from provisioning.steps.upgrades import render_newest_ahead

log = logging.getLogger("tenantplane.worker")

RESTART_DELAY = 5.0  # seconds before a duty that died starts again


@dataclass(frozen=True)
class Duty:
    name: str
    start: Callable[[], Awaitable[None]]
    restart: bool = True  # after a death; False: log it and carry on without


async def supervise(name: str, factory: Callable[[], Awaitable[None]], *, restart: bool = True,
                    delay: float = RESTART_DELAY) -> None:
    while True:
        try:
            await factory()
            return
        except Exception:
            log.exception("%s died%s", name, f"; starting it again in {delay:g} s" if restart else "")
        if not restart:
            return
        await asyncio.sleep(delay)


async def reconcile_periodically(catalog_dsn: str, catalog: asyncpg.Pool, box: SecretBox, interval: float, *,
                                 open_store: Callable[[], BackupStore] | None = None,
                                 redis_url: str | None = None, tenant_kms: TenantKmsKeys | None = None) -> None:
    """Once per `interval` across all workers (the round claimed in the catalog, rounds.py), one
    worker compares the catalog with the servers (and searches the store, Redis and, with per-tenant
    KMS keys, the KMS account for what deleted and erased tenants left) and stores the report; the
    advisory lock keeps a round that outlasts the interval from overlapping the next."""
    while True:
        await asyncio.sleep(interval)
        try:
            conn = await asyncpg.connect(catalog_dsn)
            try:
                if (await conn.fetchval("SELECT pg_try_advisory_lock($1, 0)", locks.RECONCILER)
                        and await rounds.claim(conn, rounds.RECONCILER, interval)):
                    report = await reconcile_and_store(catalog, box, open_store=open_store, redis_url=redis_url,
                                                       tenant_kms=tenant_kms)
                    if not report.clean:
                        log.warning("reconciler: %d findings, unreachable: %s", len(report.findings),
                                    ", ".join(report.unreachable + report.places_unreachable) or "none")
            finally:
                await conn.close()
        except Exception as exc:  # a round that failed is not a death: the next one comes
            log.warning("reconciler failed: %s", describe(exc))


async def watch_logins_periodically(catalog: asyncpg.Pool, box: SecretBox, interval: float) -> None:
    """Once per `interval` across all workers (rounds.py; the advisory lock keeps a slow round from
    overlapping the next): the shared login roles put back if SQL injected into a tenant's app
    altered them (login_drift.py), so such a lockout lasts at most about `interval`."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with catalog.acquire() as conn:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1, 0)", locks.LOGIN_WATCH):
                    try:  # the lock is on a pooled connection: always given back
                        if await rounds.claim(conn, rounds.LOGIN_WATCH, interval):
                            await login_drift.watch_shared_logins(catalog, box)
                    finally:
                        await conn.execute("SELECT pg_advisory_unlock($1, 0)", locks.LOGIN_WATCH)
        except Exception as exc:  # a round that failed is not a death: the next one comes
            log.warning("login watch failed: %s", describe(exc))


def worker_duties(config: WorkerConfig, catalog: asyncpg.Pool, box: SecretBox,
                  spares_wanted: asyncio.Event, metrics: WorkerMetrics | None = None,
                  redis: Any = None) -> list[Duty]:
    """`redis` is the worker's client (None without REDIS_URL: then nothing is announced anywhere)."""
    duties = [Duty("rendering the newest tenant revision",
                   functools.partial(render_newest_ahead, config.tenant_tree), restart=False)]
    if redis is not None:
        duties.append(Duty("the announcement outbox", functools.partial(
            announcement_outbox.deliver_periodically, catalog, redis, config.redis_timeout_seconds,
            on_waiting=metrics.announcements_waiting.set if metrics is not None else None)))
    if config.reconcile_interval_seconds > 0:
        duties.append(Duty("the scheduled reconciler", functools.partial(
            reconcile_periodically, config.catalog_dsn, catalog, box, config.reconcile_interval_seconds,
            open_store=functools.partial(open_store, store_url(config.backup_store_url)), redis_url=config.redis_url,
            tenant_kms=kms_leftovers.account(config.backup_kms_key_per_tenant))))
    if config.login_check_interval_seconds > 0:
        duties.append(Duty("the login watch", functools.partial(
            watch_logins_periodically, catalog, box, config.login_check_interval_seconds)))
    if config.spare_databases > 0:
        duties.append(Duty("the spare refill", functools.partial(
            keep_spares, catalog, box, config.spare_databases, spares_wanted,
            on_counts=metrics.set_spares if metrics is not None else None)))
    if config.billing_interval_seconds > 0:
        duties.append(Duty("the billing duties", functools.partial(billing_periodically, config, catalog)))
    if config.events_webhook_url and config.events_webhook_secret:
        duties.append(Duty("the event delivery", functools.partial(
            deliver_events_periodically, config, catalog,
            on_abandoned=metrics.events_abandoned.inc if metrics is not None else None)))
    # also with BACKUP_SCHEDULE off: a plan's own backup policy may schedule its tenants' backups
    duties.append(Duty("scheduled backups", functools.partial(schedules.keep_backups, config, catalog)))
    if config.backup_drill_interval > 0:
        duties.append(Duty("scheduled restore drills", functools.partial(
            drill_schedule.drill_periodically, catalog, config.backup_drill_interval, config.backup_drill_sample)))
    if metrics is not None:
        duties.append(Duty("the queue depth gauge", functools.partial(metrics.keep_depth, catalog)))
    if config.retention_interval_seconds > 0:
        duties.append(Duty("retention", functools.partial(retention.prune_periodically, config, catalog)))
    return duties
