"""Scheduled restore drills on a catalog of their own: a sample of tenants' newest backups is
queued for a drill, at most one per tenant per interval however many workers look at once, and
never a backup verified within the interval or a tenant that is busy or not active."""

from __future__ import annotations

import asyncio
import uuid

from provisioning import drill_schedule
from tests.conftest import catalog_pool

DAY = 86400.0


async def tenant_with_backups(catalog, status: str = "active", verified_recently: bool = False) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant with an older and a newer succeeded backup; answers (tenant, newest backup)."""
    tenant = uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'D', 'dedicated', $3)",
                          tenant, f"d{tenant.hex[:12]}", status)
    newest = uuid.uuid4()
    for bid, age in ((uuid.uuid4(), "2 days"), (newest, "1 hour")):
        await catalog.execute(
            "INSERT INTO backups (id, tenant_id, tier, state, store, created_at, verified_at) VALUES "
            f"($1, $2, 'dedicated', 'succeeded', 'file', now() - interval '{age}', "
            f"{'now()' if verified_recently and bid == newest else 'NULL'})", bid, tenant)
    return tenant, newest


async def test_each_due_tenant_gets_one_drill_of_its_newest_backup_per_interval(pg):
    async with catalog_pool(pg, "catalog_drill_schedule_a") as catalog:
        due = [await tenant_with_backups(catalog) for _ in range(4)]
        verified, _ = await tenant_with_backups(catalog, verified_recently=True)
        suspended, _ = await tenant_with_backups(catalog, status="suspended")
        busy, _ = await tenant_with_backups(catalog)
        await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state) VALUES ($1, 'move_tenant', $2, "
                              "'running')", uuid.uuid4(), busy)

        # two workers at once, a sample of 3 each: 4 due tenants, each drilled once
        counts = await asyncio.gather(*(drill_schedule.queue_due_drills(catalog, DAY, 3) for _ in range(2)))
        rest = await drill_schedule.queue_due_drills(catalog, DAY, 3)
        assert sum(counts) + rest == 4
        ops = await catalog.fetch("SELECT tenant_id, params->>'backup_id' AS backup_id FROM operations "
                                  "WHERE kind = 'verify_backup'")
        assert sorted((o["tenant_id"], uuid.UUID(o["backup_id"])) for o in ops) == sorted(due)
        assert {verified, suspended, busy}.isdisjoint(o["tenant_id"] for o in ops)

        # the drills end; within the interval nobody is drilled again
        await catalog.execute("UPDATE operations SET state = 'succeeded' WHERE kind = 'verify_backup'")
        assert await drill_schedule.queue_due_drills(catalog, DAY, 10) == 0
        # with an interval already past, the due tenants come round again
        await catalog.execute("UPDATE operations SET created_at = now() - interval '2 days'")
        assert await drill_schedule.queue_due_drills(catalog, DAY, 10) == 4  # busy is still busy


def test_bad_drill_settings_stop_the_process_at_start():
    import pytest

    from control_plane.settings import Settings, SettingsError

    for env in ({"BACKUP_DRILL_INTERVAL": "-1"}, {"BACKUP_DRILL_SAMPLE": "0"}):
        with pytest.raises(SettingsError):
            Settings.from_env({"CATALOG_DATABASE_URL": "postgresql://u@h/db",
                               "SECRET_KEY": "k" * 8 + "abcdefghijklmnopqrstuvwx", **env})
