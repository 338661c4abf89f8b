"""Scheduled backups with an injected clock, on a catalog of their own: exactly one backup per
slot however many workers look at once, none after the slot's window, retention that keeps the
newest `keep_last` even when they are older than `keep_days`."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from control_plane.settings import Settings, SettingsError
from provisioning import schedules
from provisioning.backups.file_store import FileStore
from provisioning.backups.kit import BackupKit
from tests.conftest import catalog_pool

CRON = "0 3 * * *"


async def add_tenants(catalog, n: int, created: dt.datetime) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    await catalog.executemany(
        "INSERT INTO tenants (id, slug, name, tier, status, created_at) VALUES ($1, $2, 'S', 'dedicated', 'active', $3)",
        [(i, f"s{i.hex[:12]}", created) for i in ids])
    return ids


def due_time(tenant_id: uuid.UUID, day: dt.datetime) -> dt.datetime:
    return day.replace(hour=3, minute=0, second=0, microsecond=0) + schedules.offset(tenant_id)


async def test_two_workers_queue_exactly_one_backup_per_slot(pg):
    async with catalog_pool(pg, "catalog_schedules_a") as catalog:
        day = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
        tenants = await add_tenants(catalog, 5, day - dt.timedelta(days=1))
        now = max(due_time(t, day) for t in tenants) + dt.timedelta(minutes=1)  # every one is due
        counts = await asyncio.gather(*(schedules.queue_due_backups(catalog, CRON, "file", now) for _ in range(2)))
        assert sum(counts) == 5
        # a worker restarted later within the window finds them queued
        assert await schedules.queue_due_backups(catalog, CRON, "file", now + dt.timedelta(minutes=1)) == 0
        rows = await catalog.fetch("SELECT tenant_id, schedule_slot, trigger, state FROM backups")
        assert sorted(r["tenant_id"] for r in rows) == sorted(tenants)
        assert {(r["schedule_slot"], r["trigger"], r["state"]) for r in rows} == {
            (day.replace(hour=3), "schedule", "queued")}
        ops = await catalog.fetch("SELECT tenant_id, kind, params FROM operations")
        assert sorted(o["tenant_id"] for o in ops) == sorted(tenants)
        assert {o["kind"] for o in ops} == {"backup_tenant"}


async def test_a_slot_is_not_taken_late_nor_for_tenants_made_after_it(pg):
    async with catalog_pool(pg, "catalog_schedules_b") as catalog:
        day = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
        (old,) = await add_tenants(catalog, 1, day - dt.timedelta(days=1))
        late = due_time(old, day) + schedules.WINDOW + dt.timedelta(minutes=1)
        assert await schedules.queue_due_backups(catalog, CRON, "file", late) == 0
        (new,) = await add_tenants(catalog, 1, due_time(old, day) + dt.timedelta(seconds=1))
        assert await schedules.queue_due_backups(catalog, CRON, "file", due_time(new, day) - dt.timedelta(seconds=1)) \
            in (0, 1)
        assert not await catalog.fetchval("SELECT count(*) FROM backups WHERE tenant_id = $1 AND "
                                          "created_at < now() - interval '1 hour'", new)


async def test_pruning_keeps_the_newest_keep_last_even_when_old(pg, tmp_path):
    async with catalog_pool(pg, "catalog_schedules_c") as catalog:
        now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
        (tenant,) = await add_tenants(catalog, 1, now - dt.timedelta(days=60))
        store = FileStore(tmp_path)
        ids = []
        for age_days in (30, 20, 10, 9, 1):  # oldest first
            bid = uuid.uuid4()
            key = f"tenants/{tenant}/backups/{bid}.tpbk"

            async def body() -> object:
                yield b"x"

            await store.write(key, body())
            await catalog.execute(
                "INSERT INTO backups (id, tenant_id, tier, state, store, object_key, created_at) "
                "VALUES ($1, $2, 'dedicated', 'succeeded', 'file', $3, $4)", bid, tenant, key,
                now - dt.timedelta(days=age_days))
            ids.append((bid, key))
        kit = BackupKit(store=store, keys=None)  # type: ignore[arg-type]
        assert await schedules.prune(catalog, kit, keep_days=7, keep_last=3, now=now) == 2
        states = {r["id"]: r["state"] for r in await catalog.fetch("SELECT id, state FROM backups")}
        assert [states[b] for b, _ in ids] == ["expired", "expired", "succeeded", "succeeded", "succeeded"]
        assert [await store.head(k) is not None for _, k in ids] == [False, False, True, True, True]
        assert await schedules.prune(catalog, kit, keep_days=7, keep_last=3, now=now) == 0


@pytest.mark.parametrize("cron", ["", "* * *", "61 * * * *", "0 3 * * * *", "every day", "0 3 * * \x00"])
def test_malformed_schedules_are_refused(cron):
    with pytest.raises(schedules.InvalidSchedule):
        schedules.check_schedule(cron)


@pytest.mark.parametrize("env", [{"BACKUP_SCHEDULE": "61 * * * *"}, {"BACKUP_KEEP_DAYS": "-1"},
                                 {"BACKUP_KEEP_LAST": "-3"}, {"BACKUP_STORE_URL": "ftp://x/y"}])
def test_bad_backup_settings_stop_the_process_at_start(env):
    with pytest.raises(SettingsError):
        Settings.from_env({"CATALOG_DATABASE_URL": "postgresql://u@h/db", "SECRET_KEY": "k" * 8 + "abcdefghijklmnopqrstuvwx",
                           **env})


async def on_plan(catalog, tenants: list[uuid.UUID], plan: str, backup: str | None) -> None:
    await catalog.execute("INSERT INTO plans (name, backup) VALUES ($1, $2::jsonb)", plan, backup)
    await catalog.execute("UPDATE tenants SET plan = $1 WHERE id = ANY($2::uuid[])", plan, tenants)


async def test_a_plans_backup_schedule_replaces_the_global_one_for_its_tenants(pg):
    async with catalog_pool(pg, "catalog_schedules_d") as catalog:
        day = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
        created = day - dt.timedelta(days=1)
        (at_five,), (off,), (no_policy,), (no_plan,) = [await add_tenants(catalog, 1, created) for _ in range(4)]
        await on_plan(catalog, [at_five], "at_five", '{"schedule": "0 5 * * *", "keep_days": 1, "keep_last": 1}')
        await on_plan(catalog, [off], "no_backups", '{"schedule": "off", "keep_days": 1, "keep_last": 1}')
        await on_plan(catalog, [no_policy], "plain", None)
        # after every 03:00 slot is due, before any 05:00 one: the plan's tenant waits for its own slot
        now = day.replace(hour=4, minute=30)
        assert await schedules.queue_due_backups(catalog, CRON, "file", now) == 2
        slots = {r["tenant_id"]: r["schedule_slot"] for r in await catalog.fetch("SELECT * FROM backups")}
        assert slots == {no_policy: day.replace(hour=3), no_plan: day.replace(hour=3)}
        later = day.replace(hour=6) + schedules.offset(at_five)
        assert await schedules.queue_due_backups(catalog, CRON, "file", later) == 1
        assert await catalog.fetchval("SELECT schedule_slot FROM backups WHERE tenant_id = $1", at_five) \
            == day.replace(hour=5)
        assert not await catalog.fetchval("SELECT count(*) FROM backups WHERE tenant_id = $1", off)
        # with the global schedule off, tenants on a plan with a schedule still get theirs
        await catalog.execute("DELETE FROM operations")
        assert await schedules.queue_due_backups(catalog, None, "file", later + dt.timedelta(days=1)) == 1


async def test_pruning_follows_the_plans_retention(pg, tmp_path):
    async with catalog_pool(pg, "catalog_schedules_e") as catalog:
        now = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)
        planned, unplanned = await add_tenants(catalog, 2, now - dt.timedelta(days=60))
        await on_plan(catalog, [planned], "keep_one", '{"schedule": "0 3 * * *", "keep_days": 0, "keep_last": 1}')
        store = FileStore(tmp_path)
        for tenant in (planned, unplanned):
            for age_days in (3, 2, 1):
                bid = uuid.uuid4()
                await catalog.execute(
                    "INSERT INTO backups (id, tenant_id, tier, state, store, created_at) "
                    "VALUES ($1, $2, 'dedicated', 'succeeded', 'file', $3)", bid, tenant, now - dt.timedelta(days=age_days))
        kit = BackupKit(store=store, keys=None)  # type: ignore[arg-type]
        # global: 7 days, last 3 -> the unplanned tenant keeps all; the plan keeps only the newest
        assert await schedules.prune(catalog, kit, keep_days=7, keep_last=3, now=now) == 2
        kept = await catalog.fetch("SELECT tenant_id, count(*) AS n FROM backups WHERE state = 'succeeded' "
                                   "GROUP BY tenant_id")
        assert {r["tenant_id"]: r["n"] for r in kept} == {planned: 1, unplanned: 3}
