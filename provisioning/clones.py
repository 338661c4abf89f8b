"""A new tenant made from a backup (`POST /v1/tenants` with `from_backup`), on any tier, as an operation:

    plan_clone → place_tenant → prepare_clone → load_clone_scratch → copy_clone → compare_clone
      → drop_clone_scratch → migrate_clone

The backup (of another tenant, of any tier) is first loaded into a scratch database on the new
tenant's server, `tp_rs_<new tenant id>` (the restore staging name: a new tenant has no restore of
its own, and the reconciler knows the prefix), as a drill loads it (drills.load_scratch). The new
tenant's objects are made at the backup's revision by its tier's own move-target preparation
(hardened like any new tenant's), the rows are copied over with the move's binary COPY (tagged with
the new tenant's id on the shared tier), and the copy must agree with the counts and checksums the
backup recorded at dump time (they leave `tenant_id` out, so they are the same on every tier).
Only then is the scratch database dropped and the tenant migrated to the code's head; the finish
makes it `active`. Every step can run again: the scratch is made afresh, the target cleared before
the copy. A clone given up drops its scratch database and is `failed`, like a failed create (a
retry loads again; `DELETE` removes what it made).
"""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg

from contracts.identifiers import quote, tenant_schema
from provisioning import drills, moves, queue
from provisioning.backing_up import read_backup
from provisioning.backups import manifest as manifests
from provisioning.context import StepContext
from provisioning.steps import catalog, restore_roles
from provisioning.tiers import tier_manager
from provisioning.tiers.snapshots import staging_database
from provisioning.tiers.tables import TenantTables


def scratch_database(ctx: StepContext) -> str:
    return staging_database(ctx.tenant_id)


def _backup(ctx: StepContext) -> uuid.UUID:
    return uuid.UUID(ctx.params["backup_id"])


async def plan_clone(ctx: StepContext) -> None:
    """What the backup is (checked by the API too; again here, since the catalog may have changed)."""
    if "source_tenant" in ctx.params:
        return
    row = await ctx.catalog.fetchrow("SELECT tenant_id, tier, state, revision FROM backups WHERE id = $1", _backup(ctx))
    if row is None:
        raise LookupError(f"no backup {ctx.params['backup_id']}")
    if row["state"] != "succeeded":
        raise ValueError(f"backup {ctx.params['backup_id']} is {row['state']}, not succeeded")
    values = {"source_tenant": str(row["tenant_id"]), "backup_tier": row["tier"], "revision": row["revision"]}
    ctx.params.update(values)
    await queue.save_params(ctx.catalog, ctx.operation_id, values)


def _at_backup_revision(ctx: StepContext) -> StepContext:
    return dataclasses.replace(ctx, params={**ctx.params, "target": ctx.params["revision"]})


async def prepare_clone(ctx: StepContext) -> None:
    """The new tenant's database, schema or role at the backup's revision, hardened (the tier's
    move-target preparation: the same objects and grants a create makes)."""
    await tier_manager(ctx.tier).prepare_target(_at_backup_revision(ctx), False)


async def load_clone_scratch(ctx: StepContext) -> None:
    await drills.load_scratch(ctx, scratch_database(ctx), _backup(ctx), ctx.params["backup_tier"],
                              uuid.UUID(ctx.params["source_tenant"]))


class ScratchTables(TenantTables):
    """The backup's tables in the scratch database: `public`, or the source's schema for a
    schema-tier backup. Rows carry no tenant_id there (a shared-tier archive loads into a copy of
    the template), so a shared-tier target gets the new tenant's id (TenantTables.read_column)."""

    def __init__(self, ctx: StepContext) -> None:
        schema = tenant_schema(ctx.params["source_tenant"]) if ctx.params["backup_tier"] == "schema" else "public"
        super().__init__(ctx, schema)
        self.database = scratch_database(ctx)


async def _target(ctx: StepContext) -> TenantTables:
    await ctx.server()  # TenantTables connects to the server the context holds
    return tier_manager(ctx.tier).tables(ctx)


async def copy_clone(ctx: StepContext) -> None:
    target = await _target(ctx)
    await moves.copy_tables(ScratchTables(ctx), target)


async def compare_clone(ctx: StepContext) -> None:
    recorded, chunks = await read_backup(ctx, _backup(ctx), uuid.UUID(ctx.params["source_tenant"]))
    await chunks.aclose()  # type: ignore[attr-defined]  # only the manifest is needed here
    target = await _target(ctx)
    async with target.connect() as conn:
        await target.bind(conn)
        shared = ctx.tier == "shared"
        if found := await manifests.differences(recorded, conn, target.schema, ctx.tenant_id if shared else None):
            raise RuntimeError("the clone differs from the backup's manifest: " + "; ".join(found))


async def drop_clone_scratch(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is not None:
        await (await ctx.admin(server)).execute(f"DROP DATABASE IF EXISTS {quote(scratch_database(ctx))} WITH (FORCE)")
        await restore_roles.drop_restore_role(ctx, None, keep_objects=False)  # a load killed half-way


async def migrate_clone(ctx: StepContext) -> None:
    """A backup older than the code's head is brought there by the tier's own migrate steps."""
    for step in tier_manager(ctx.tier).migrate:
        await step(ctx)


STEPS = (plan_clone, catalog.place_tenant, prepare_clone, load_clone_scratch, copy_clone, compare_clone,
         drop_clone_scratch, migrate_clone)


async def fail_clone(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """A clone given up is `failed` like a create; its scratch is dropped by the undo, so a retry
    loads the backup again (the steps after the preparation are marked to be done again)."""
    await catalog.mark_tenant_failed(conn, ctx)
    await queue.redo_steps_after(conn, ctx.operation_id, STEPS.index(prepare_clone))
