"""Scheduled restore drills, a duty of every worker (duties.py): every BACKUP_DRILL_INTERVAL
seconds, the newest succeeded backup of a sample of active tenants (BACKUP_DRILL_SAMPLE, chosen at
random among those whose newest backup was not verified within the interval) gets a drill, an
ordinary `verify_backup` operation (drills.py), so a backup nobody restored is still proved.

One statement queues the round. However many workers look, a tenant gets at most one drill per
interval: a drill queued for it within the interval is seen by the next look, and two looks at
once meet the one-open-operation-per-tenant index (the loser's row is skipped). A tenant busy with
another operation is simply left for the next round.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from provisioning import queue

log = logging.getLogger("tenantplane.worker")

_QUEUE_DRILLS = (
    "WITH newest AS (SELECT DISTINCT ON (tenant_id) id, tenant_id, verified_at FROM backups "
    "  WHERE state = 'succeeded' ORDER BY tenant_id, created_at DESC, id DESC), "
    "chosen AS (SELECT n.id, n.tenant_id FROM newest n JOIN tenants t ON t.id = n.tenant_id "
    "  WHERE t.status = 'active' AND (n.verified_at IS NULL OR n.verified_at < now() - make_interval(secs => $1)) "
    "  AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = n.tenant_id AND o.kind = 'verify_backup' "
    "    AND o.created_at > now() - make_interval(secs => $1)) "
    f"  AND {queue.no_open_operation('n.tenant_id')} "
    "  ORDER BY random() LIMIT $2), "
    "queued AS (INSERT INTO operations (id, kind, tenant_id, state, params) "
    "  SELECT gen_random_uuid(), 'verify_backup', tenant_id, 'queued', jsonb_build_object('backup_id', id::text) "
    "  FROM chosen ON CONFLICT DO NOTHING RETURNING 1) "
    f"SELECT count(*) FROM queued, LATERAL (SELECT {queue.WAKE_WORKERS}) AS w"
)


async def queue_due_drills(catalog: asyncpg.Pool, interval_seconds: float, sample: int) -> int:
    """Queue this round's drills; answers how many."""
    return await catalog.fetchval(_QUEUE_DRILLS, float(interval_seconds), sample)


async def drill_periodically(catalog: asyncpg.Pool, interval_seconds: float, sample: int,
                             every: float | None = None) -> None:
    """The duty: look, sleep (a tenth of the interval, at most 10 minutes, so a worker restart
    does not delay a round by a whole interval); a look that fails is logged and the next one comes."""
    pause = every if every is not None else min(interval_seconds / 10, 600.0)
    while True:
        try:
            if queued := await queue_due_drills(catalog, interval_seconds, sample):
                log.info("queued %d scheduled restore drills", queued)
        except Exception as exc:
            log.warning("scheduled drills: %s: %s", exc.__class__.__name__, exc)
        await asyncio.sleep(pause)
