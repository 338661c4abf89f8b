"""Restoring a tenant in place from one of its backups, as an operation:

    plan_restore → pause_writes → fetch_and_load → harden_restored → compare_manifest
      → switch_placement → migrate_restored → remove_old_copy → resume_writes

Writes are paused (status `maintenance`, as for a move) so nothing written meanwhile is lost by
the restore. The object is read through its digest check and decrypted with the tenant's key as
it streams into a new copy beside the tenant's (the tier's restore: provisioning/tiers/snapshots.py),
which gets the tier's hardening and must agree with the counts and checksums recorded at dump
time. Only then does it become the tenant's (a new placement version, routers told), is migrated
to the code's head when the backup is older, and is the old copy dropped. A restore given up before
the switch drops what it made and leaves the tenant on its old copy, active; after the switch a
failed step is retried where it failed.
"""

from __future__ import annotations

import uuid

import asyncpg

from provisioning import moves, queue
from provisioning.backing_up import read_backup
from provisioning.context import StepContext
from provisioning.tiers import tier_manager


async def plan_restore(ctx: StepContext) -> None:
    """The backup must be this tenant's, succeeded, and of the tier the tenant is on (checked by
    the API too; again here, since the catalog may have changed since)."""
    row = await ctx.catalog.fetchrow("SELECT tenant_id, tier, state, revision FROM backups WHERE id = $1",
                                     uuid.UUID(ctx.params["backup_id"]))
    if row is None or row["tenant_id"] != ctx.tenant_id:
        raise LookupError("the backup is not one of this tenant's")
    if row["state"] != "succeeded":
        raise ValueError(f"backup {ctx.params['backup_id']} is {row['state']}, not succeeded")
    if row["tier"] != ctx.tier:
        raise ValueError(f"a {row['tier']}-tier backup cannot be restored in place on the {ctx.tier} tier")
    if "revision" not in ctx.params:
        ctx.params["revision"] = row["revision"]
        await queue.save_params(ctx.catalog, ctx.operation_id, {"revision": row["revision"]})


async def fetch_and_load(ctx: StepContext) -> None:
    recorded, chunks = await read_backup(ctx, uuid.UUID(ctx.params["backup_id"]), ctx.tenant_id)
    await tier_manager(ctx.tier).restore.load(ctx, chunks, recorded)  # type: ignore[arg-type]


async def harden_restored(ctx: StepContext) -> None:
    await tier_manager(ctx.tier).restore.harden(ctx)


async def compare_manifest(ctx: StepContext) -> None:
    recorded, chunks = await read_backup(ctx, uuid.UUID(ctx.params["backup_id"]), ctx.tenant_id)
    await chunks.aclose()  # type: ignore[attr-defined]  # only the manifest is needed here
    if found := await tier_manager(ctx.tier).restore.compare(ctx, recorded):
        raise RuntimeError("the restored copy differs from the backup's manifest: " + "; ".join(found))


async def switch_placement(ctx: StepContext) -> None:
    """The restored copy becomes the tenant's; the placement's new version (in the same
    transaction as the record that it switched) makes routers drop pools to the old copy."""
    if "switched" in ctx.params:
        return
    await tier_manager(ctx.tier).restore.swap(ctx)
    async with ctx.catalog.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE placements SET version = version + 1, tenant_revision = $2, updated_at = now() "
                           "WHERE tenant_id = $1", ctx.tenant_id, ctx.params["revision"])
        await queue.save_params(conn, ctx.operation_id, {"switched": True})
    ctx.params["switched"] = True
    await ctx.announce(ctx.tenant_id)


async def migrate_restored(ctx: StepContext) -> None:
    """A backup older than the code's head is brought there by the tier's own migrate steps
    (each asks the copy its revision first: nothing to do at head)."""
    for step in tier_manager(ctx.tier).migrate:
        await step(ctx)


async def remove_old_copy(ctx: StepContext) -> None:
    await tier_manager(ctx.tier).restore.drop_old(ctx)


async def resume_writes(ctx: StepContext) -> None:
    await ctx.catalog.execute("UPDATE tenants SET status = 'active', updated_at = now() "
                              "WHERE id = $1 AND status = 'maintenance'", ctx.tenant_id)
    await ctx.announce(ctx.tenant_id)


pause_writes = moves.pause_writes


async def abort_restore(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Failure of a restore: writes resume on the copy that serves the tenant. Before the switch,
    the steps after the plan are marked to be done again, so a retry pauses writes and loads anew."""
    await conn.execute("UPDATE tenants SET status = 'active', updated_at = now() "
                       "WHERE id = $1 AND status = 'maintenance'", ctx.tenant_id)
    if "switched" not in ctx.params:
        await queue.redo_steps_after(conn, ctx.operation_id, 0)


async def discard_restored(ctx: StepContext) -> None:
    """Undo of a restore given up before its switch: what it made goes, the old copy stays."""
    if "switched" not in ctx.params:
        await tier_manager(ctx.tier).restore.discard(ctx)
