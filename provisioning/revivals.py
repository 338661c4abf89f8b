"""A deleted (not erased) tenant restored from one of its backups under its own id and slug
(`POST /v1/tenants/{id}/restore` on a deleted tenant), as an operation `revive_tenant`:

    plan_revival → place_tenant → prepare_clone → load_clone_scratch → copy_clone → compare_clone
      → drop_clone_scratch → migrate_clone

A delete dropped the tenant's database, schema or rows and its placement, so bringing it back is
the making of a tenant from a backup (clones.py) whose id happens to be the backup's own tenant:
placed again as a create is, its objects made at the backup's revision and hardened, the backup
loaded into the scratch database `tp_rs_<id>`, the rows copied, compared with the counts and
checksums of dump time, the scratch dropped, migrated to the code's head. The finish makes the
tenant `active` with a new placement version, in the statement that records the operation and its
`tenant.restored` event; routers are told after it. The steps are clones.py's own, so each is
idempotent the same way (the scratch made afresh, the target cleared before the copy).

Only the plan is this module's: the backup must be the tenant's own (a clone is how another
tenant's data becomes a tenant) and the tenant must not have been erased since the API accepted it.
A revival given up is `failed` like a failed create, its scratch dropped: a retry loads again, a
`DELETE` removes what it made and the tenant is `deleted` again.
"""

from __future__ import annotations

import uuid

import asyncpg

from provisioning import clones, queue
from provisioning.context import StepContext
from provisioning.steps import catalog


class NotRevivable(RuntimeError):
    """The catalog changed after the API accepted the revival (the API checks the same first)."""


async def plan_revival(ctx: StepContext) -> None:
    """The backup is this tenant's and the tenant was never erased; then the clone's plan (what the
    backup is: its tier, revision, state)."""
    if await ctx.catalog.fetchval("SELECT 1 FROM tenant_erasures WHERE tenant_id = $1", ctx.tenant_id):
        raise NotRevivable("the tenant was erased: its backups are gone for good")
    owner = await ctx.catalog.fetchval("SELECT tenant_id FROM backups WHERE id = $1",
                                       uuid.UUID(ctx.params["backup_id"]))
    if owner is not None and owner != ctx.tenant_id:
        raise NotRevivable("the backup is not one of this tenant's")
    await clones.plan_clone(ctx)


STEPS = (plan_revival, catalog.place_tenant, clones.prepare_clone, clones.load_clone_scratch, clones.copy_clone,
         clones.compare_clone, clones.drop_clone_scratch, clones.migrate_clone)


async def fail_revival(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Given up: `failed`, like a create (the undo drops the scratch, so the steps after the
    preparation are marked to be done again and a retry loads the backup anew)."""
    await catalog.mark_tenant_failed(conn, ctx)
    await queue.redo_steps_after(conn, ctx.operation_id, STEPS.index(clones.prepare_clone))
