"""Retention: back-dated finished operations (with their steps), audit rows and reconciliation
reports older than their settings go, in batches; open operations, each tenant's newest operation of
each kind, operations a backup or a fleet migration names, the newest report and young rows stay;
0 keeps a table forever. The settings refuse an audit trail shorter than the operations it audits."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from control_plane.settings import Settings, SettingsError
from provisioning import retention
from provisioning.config import WorkerConfig
from tests.conftest import catalog_pool

DAY = "interval '1 day'"


async def _tenant(db: asyncpg.Pool) -> uuid.UUID:
    tid = uuid.uuid4()
    await db.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', 'dedicated', 'active')",
                     tid, f"r-{tid.hex[:12]}")
    return tid


async def _op(db: asyncpg.Pool, tenant: uuid.UUID, *, age_days: int, state: str = "succeeded",
              kind: str = "migrate_tenant") -> uuid.UUID:
    oid = uuid.uuid4()
    finished = None if state in ("queued", "running") else f"now() - {age_days} * {DAY}"
    await db.execute(
        f"INSERT INTO operations (id, kind, tenant_id, state, created_at, finished_at) "
        f"VALUES ($1, $2, $3, $4, now() - {age_days} * {DAY}, {finished or 'NULL'})", oid, kind, tenant, state)
    await db.execute("INSERT INTO operation_steps (operation_id, position, name, state) VALUES ($1, 0, 's', $2)",
                     oid, "succeeded" if finished else "pending")
    return oid


def _config(**kw) -> WorkerConfig:
    return WorkerConfig(catalog_dsn="postgresql://unused/x", secret_key="k" * 32, **kw)


async def _ids(db: asyncpg.Pool, table: str) -> set:
    return {r[0] for r in await db.fetch(f"SELECT id FROM {table}")}


async def test_old_finished_rows_go_in_batches_and_what_must_stay_stays(pg):
    async with catalog_pool(pg, "catalog_retention") as db:
        a, b = await _tenant(db), await _tenant(db)
        old = [await _op(db, a, age_days=40 + i) for i in range(5)]  # five old migrations of a
        newest_a = await _op(db, a, age_days=35)  # a's newest migrate_tenant: kept (its latest of the kind)
        failed_old = await _op(db, a, age_days=50, state="failed", kind="move_tenant")
        await _op(db, a, age_days=45, kind="move_tenant")  # supersedes the failed move, newest move: kept
        running = await _op(db, b, age_days=60, state="running")  # open: never pruned
        backed = await _op(db, b, age_days=60, kind="backup_tenant")
        await _op(db, b, age_days=1, kind="backup_tenant")
        await db.execute("INSERT INTO backups (id, tenant_id, tier, store, operation_id) "
                         "VALUES ($1, $2, 'dedicated', 'file', $3)", uuid.uuid4(), b, backed)
        in_run = await _op(db, b, age_days=60)
        run = uuid.uuid4()
        await db.execute("INSERT INTO migration_runs (id, target_revision, canary_size, wave_size) "
                         "VALUES ($1, 't0001', 0, 10)", run)
        await db.execute("INSERT INTO migration_run_tenants (run_id, tenant_id, wave, operation_id) "
                         "VALUES ($1, $2, 0, $3)", run, b, in_run)
        young = await _op(db, b, age_days=2)  # b's newest migrate, and young anyway
        for age in (400, 380, 10):
            await db.execute(f"INSERT INTO audit_log (at, actor, action, target_type) "
                             f"VALUES (now() - {age} * {DAY}, 'admin', 'x', 'tenant')")
        for age in (90, 60, 45):  # all old: the newest stays anyway
            await db.execute(f"INSERT INTO reconciliation_reports (started_at) VALUES (now() - {age} * {DAY})")
        before_ops = await _ids(db, "operations")

        pruned = await retention.prune_once(_config(retention_batch_size=2), db)

        gone = before_ops - await _ids(db, "operations")
        assert gone == {*old, failed_old}
        assert pruned == retention.Pruned(operations=6, audit_rows=2, reports=2)
        for kept in (newest_a, running, backed, in_run, young):
            assert kept in await _ids(db, "operations")
        assert not await db.fetchval("SELECT count(*) FROM operation_steps WHERE operation_id = ANY($1)", list(gone))
        assert await db.fetchval("SELECT count(*) FROM audit_log") == 1
        assert await db.fetchval("SELECT min(started_at) > now() - 46 * interval '1 day' "
                                 "FROM reconciliation_reports")
        # a second pass finds nothing left to delete
        assert await retention.prune_once(_config(), db) == retention.Pruned()


async def test_zero_keeps_a_table_forever(pg):
    async with catalog_pool(pg, "catalog_retention_zero") as db:
        a = await _tenant(db)
        old = [await _op(db, a, age_days=1000 + i) for i in range(3)]
        await db.execute(f"INSERT INTO audit_log (at, actor, action, target_type) VALUES (now() - 5000 * {DAY}, 'a', 'x', 't')")
        pruned = await retention.prune_once(
            _config(operation_retention_days=0, audit_retention_days=0, report_retention_days=0), db)
        assert pruned == retention.Pruned()
        assert set(old) <= await _ids(db, "operations")
        assert await db.fetchval("SELECT count(*) FROM audit_log") == 1


def test_retention_settings_are_read_and_checked():
    base = {"CATALOG_DATABASE_URL": "postgresql://u@h/db", "SECRET_KEY": "s3cr3t-K3y-" + "abcdefghij" * 3}
    s = Settings.from_env(base)
    assert (s.operation_retention_days, s.report_retention_days, s.audit_retention_days) == (30, 30, 365)
    s = Settings.from_env({**base, "OPERATION_RETENTION_DAYS": "7", "RECONCILIATION_RETENTION_DAYS": "3",
                           "AUDIT_RETENTION_DAYS": "0", "RETENTION_BATCH_SIZE": "50"})
    cfg = s.worker_config()
    assert (cfg.operation_retention_days, cfg.report_retention_days, cfg.audit_retention_days,
            cfg.retention_batch_size) == (7, 3, 0, 50)
    for env, var in ({"AUDIT_RETENTION_DAYS": "10"}, "AUDIT_RETENTION_DAYS"), \
                    ({"OPERATION_RETENTION_DAYS": "0"}, "AUDIT_RETENTION_DAYS"), \
                    ({"OPERATION_RETENTION_DAYS": "-1"}, "OPERATION_RETENTION_DAYS"), \
                    ({"RETENTION_BATCH_SIZE": "0"}, "RETENTION_BATCH_SIZE"):
        with pytest.raises(SettingsError, match=var):
            Settings.from_env({**base, **env})
