"""Scheduled backups and their retention, a duty of every worker (duties.py).

Slots come from a 5-field cron expression in UTC (BACKUP_SCHEDULE, parsed by croniter; a tenant
whose plan has a backup policy, `PUT /v1/plans/{name}` `"backup"`, follows the plan's schedule and
retention instead). Each
tenant's backup of a slot is due at the slot plus an offset of its own within the hour (from its
id), so a fleet does not dump at once. Every look queues, for each active tenant without an open
operation, the backup of its latest due slot, in one statement: the backup row (trigger
`schedule`, its `schedule_slot`) and the operation together. The unique index on (tenant_id,
schedule_slot) makes the slot's backup exactly one however many workers look at the same time;
a worker that restarts within the slot looks again and finds it queued (or queues it then). A
slot's backup is taken within WINDOW of its due time, and only for tenants that existed then: a
fleet whose workers were all down for longer skips that slot rather than dumping all at once.

Retention: a tenant's succeeded backups younger than `keep_days` stay, and so do its newest
`keep_last` whatever their age; the others are marked `expired` and their objects removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable

import asyncpg
from croniter import croniter

from provisioning import queue
from provisioning.backups.kit import BackupKit, open_kit, store_kind
from provisioning.config import WorkerConfig

log = logging.getLogger("tenantplane.worker")

SPREAD_SECONDS = 3600  # a tenant's backup starts up to an hour after its slot
WINDOW = dt.timedelta(hours=2)  # how long after its due time a slot's backup is still taken
LOOK_EVERY = 60.0


class InvalidSchedule(ValueError):
    pass


def check_schedule(cron: str) -> str:
    """A 5-field cron expression, or InvalidSchedule."""
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidSchedule(f"not a 5-field cron expression: {cron!r}")
    return cron


def offset(tenant_id: uuid.UUID) -> dt.timedelta:
    return dt.timedelta(seconds=uuid.UUID(str(tenant_id)).int % SPREAD_SECONDS)


def due_slot(cron: str, tenant_id: uuid.UUID, now: dt.datetime) -> dt.datetime:
    """The latest slot whose backup (slot + the tenant's offset) is due at `now`."""
    return croniter(cron, now - offset(tenant_id)).get_prev(dt.datetime)


_QUEUE_SCHEDULED = (
    "WITH b AS (INSERT INTO backups (id, tenant_id, tier, state, trigger, store, operation_id, schedule_slot) "
    "  SELECT $1, t.id, t.tier, 'queued', 'schedule', $4, $2, $3 FROM tenants t "
    f"  WHERE t.id = $5 AND t.status = 'active' AND {queue.no_open_operation('t.id')} "
    "  ON CONFLICT (tenant_id, schedule_slot) WHERE schedule_slot IS NOT NULL DO NOTHING RETURNING id, tenant_id), "
    "op AS (" + queue.enqueue_clause(id="$2", kind="'backup_tenant'", tenant_id="b.tenant_id",
                                     params="jsonb_build_object('backup_id', b.id::text)", source="b") + ") "
    f"SELECT count(*) FROM b, LATERAL (SELECT {queue.WAKE_WORKERS}) AS w"
)


def tenant_cron(global_cron: str | None, plan_schedule: str | None) -> str | None:
    """The schedule a tenant follows: its plan's when the plan has a backup policy ("off": none),
    else the global one (None: none)."""
    cron = plan_schedule if plan_schedule is not None else global_cron
    return None if cron in (None, "", "off") else cron


async def queue_due_backups(catalog: asyncpg.Pool, cron: str | None, store: str, now: dt.datetime) -> int:
    """Queue each active tenant's backup of its latest due slot unless it exists; returns how many.
    `cron` is the global schedule; a tenant whose plan has a backup policy follows the plan's."""
    queued = 0
    for row in await catalog.fetch("SELECT t.id, t.created_at, p.backup->>'schedule' AS schedule FROM tenants t "
                                   "LEFT JOIN plans p ON p.name = t.plan WHERE t.status = 'active'"):
        mine = tenant_cron(cron, row["schedule"])
        if mine is None:
            continue
        try:
            slot = due_slot(mine, row["id"], now)
        except (ValueError, KeyError) as exc:  # checked when the plan was put; never stop the others
            log.warning("scheduled backups: tenant %s: bad schedule: %s", row["id"], exc)
            continue
        due = slot + offset(row["id"])
        if now - due > WINDOW or row["created_at"] > due:
            continue
        try:
            queued += await catalog.fetchval(_QUEUE_SCHEDULED, uuid.uuid4(), uuid.uuid4(), slot, store, row["id"])
        except asyncpg.UniqueViolationError:
            pass  # another operation of the tenant was queued meanwhile: the next look tries again
    return queued


async def prune(catalog: asyncpg.Pool, kit: BackupKit, keep_days: int, keep_last: int, now: dt.datetime) -> int:
    """Expire what retention no longer keeps; the row stays (state `expired`), the object goes.
    `keep_days` and `keep_last` are the global retention; a tenant whose plan has a backup policy
    follows the plan's."""
    rows = await catalog.fetch(
        "SELECT id, object_key FROM (SELECT b.id, b.object_key, b.created_at, "
        "  row_number() OVER (PARTITION BY b.tenant_id ORDER BY b.created_at DESC, b.id DESC) AS rank, "
        "  coalesce((p.backup->>'keep_last')::int, $1) AS keep_last, "
        "  coalesce((p.backup->>'keep_days')::int, $2) AS keep_days "
        "  FROM backups b JOIN tenants t ON t.id = b.tenant_id LEFT JOIN plans p ON p.name = t.plan "
        "  WHERE b.state = 'succeeded') b "
        "WHERE rank > keep_last AND created_at < $3::timestamptz - make_interval(days => keep_days)",
        keep_last, keep_days, now)
    for row in rows:
        # marked first: a backup is never listed succeeded without its object
        await catalog.execute("UPDATE backups SET state = 'expired' WHERE id = $1 AND state = 'succeeded'", row["id"])
        if row["object_key"]:
            await kit.store.delete(row["object_key"])
    return len(rows)


async def keep_backups(config: WorkerConfig, catalog: asyncpg.Pool,
                       clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                       every: float = LOOK_EVERY) -> None:
    """The duty: look, prune, sleep; a look that fails is logged and the next one comes."""
    cron = check_schedule(config.backup_schedule) if config.backup_schedule else None  # None: plans' only
    kit = open_kit(config, catalog)
    store = store_kind(config.backup_store_url)
    while True:
        try:
            now = clock()
            if queued := await queue_due_backups(catalog, cron, store, now):
                log.info("queued %d scheduled backups", queued)
            await prune(catalog, kit, config.backup_keep_days, config.backup_keep_last, now)
        except Exception as exc:
            log.warning("scheduled backups: %s: %s", exc.__class__.__name__, exc)
        await asyncio.sleep(every)
