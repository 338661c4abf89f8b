"""Retention: once per interval across all workers (rounds.RETENTION), one worker deletes finished
operations (with their steps), audit rows, reconciliation reports and lifecycle events older than
their settings (0 keeps them forever; an event still waiting for the webhook is kept), in batches
of at most `batch` rows per statement, so no statement holds locks or scans for long and the API's
writes go on between them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from provisioning import events, queue, rounds
from provisioning.config import WorkerConfig
from provisioning.reconcile import prune_reports
from provisioning.runner import describe

log = logging.getLogger("tenantplane.worker")

BATCH_PAUSE = 0.05  # seconds between batches: the catalog serves the API meanwhile


class Pruned(msgspec.Struct, frozen=True):
    operations: int = 0
    audit_rows: int = 0
    reports: int = 0
    events: int = 0


async def _prune_audit(catalog: asyncpg.Pool, days: int, batch: int) -> int:
    # the audit log is append-only everywhere else; its only delete is this one
    status = await catalog.execute(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log "
        "  WHERE at < now() - make_interval(days => $1) ORDER BY at, id LIMIT $2)", days, batch)
    return int(status.split()[-1])


async def _in_batches(prune: Callable[[], Awaitable[int]], batch: int) -> int:
    total = 0
    while True:
        gone = await prune()
        total += gone
        if gone < batch:
            return total
        await asyncio.sleep(BATCH_PAUSE)


async def prune_once(config: WorkerConfig, catalog: asyncpg.Pool) -> Pruned:
    """One retention pass over the four tables, as the settings say."""
    batch = config.retention_batch_size
    ops = audit = reports = 0
    if config.operation_retention_days > 0:
        ops = await _in_batches(lambda: queue.prune_finished(catalog, config.operation_retention_days, batch), batch)
    if config.audit_retention_days > 0:
        audit = await _in_batches(lambda: _prune_audit(catalog, config.audit_retention_days, batch), batch)
    if config.report_retention_days > 0:
        reports = await _in_batches(lambda: prune_reports(catalog, config.report_retention_days, batch), batch)
    gone_events = 0
    if config.events_keep_days > 0:
        # without a webhook no event waits for one: all old ones go
        waiting = (config.events_webhook_types or events.EVENT_TYPES) if config.events_webhook_url else ()
        gone_events = await _in_batches(lambda: events.prune(
            catalog, days=config.events_keep_days, batch=batch, waiting_types=waiting), batch)
    return Pruned(operations=ops, audit_rows=audit, reports=reports, events=gone_events)


async def prune_periodically(config: WorkerConfig, catalog: asyncpg.Pool) -> None:
    """Every interval one worker's pass (claimed first); the others skip that round."""
    interval = config.retention_interval_seconds
    while True:
        try:
            if await rounds.claim(catalog, rounds.RETENTION, interval):
                pruned = await prune_once(config, catalog)
                if pruned != Pruned():
                    log.info("retention: deleted %d operations, %d audit rows, %d reconciliation reports, "
                             "%d lifecycle events", pruned.operations, pruned.audit_rows, pruned.reports, pruned.events)
        except Exception as exc:  # a failed round is not a death: the next one comes
            log.warning("retention failed: %s", describe(exc))
        await asyncio.sleep(interval)
