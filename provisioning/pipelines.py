"""Each lifecycle as a tuple of idempotent steps, per tier (the tiers' own steps, provisioning/tiers/),
with the catalog change that finishes it: run in the statement that marks the operation succeeded,
so a tenant is never `active` while its operation still looks open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from provisioning import backing_up, clones, drills, erasure, moves, queue, restores, revivals
from provisioning.context import StepContext
from provisioning.steps import catalog, rate_limits
from provisioning.tiers import TIERS, TierManager
from provisioning.tiers.base import Step

Finish = Callable[[asyncpg.Connection, StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    finish: catalog.CatalogChange  # run in the statement that marks the operation succeeded
    fail: Finish = catalog.mark_tenant_failed
    in_flight_status: str = "provisioning"  # the tenant's status while the operation runs (or is retried)
    undo: tuple[Step, ...] = ()  # best effort, after a final failure (e.g. drop a half-made copy)
    # run in the finish's transaction, after it (what the finish makes possible: a delete's erasure)
    then: Finish | None = None

    @property
    def step_names(self) -> list[str]:
        return [step.__name__ for step in self.steps]


MOVE = Pipeline(
    steps=(
        backing_up.backup_before_move,  # only with BACKUP_BEFORE_MOVE (else nothing)
        moves.plan_move,
        moves.prepare_target,  # before the pause: writes wait only for the copy itself
        moves.pause_writes,
        moves.copy_data,
        moves.verify_copy,
        moves.switch_placement,
        moves.remove_old_copy,
    ),
    finish=catalog.KEEP_STATUS,
    fail=moves.abort_move,
    in_flight_status="active",
    undo=(moves.discard_target,),
)


# a backup leaves the tenant as it is, serving, also when it fails (the backup is listed failed)
BACKUP = Pipeline(
    steps=(backing_up.start_backup, backing_up.dump_to_store, backing_up.verify_object, backing_up.record_backup),
    finish=catalog.KEEP_STATUS,
    fail=backing_up.mark_backup_failed,
    in_flight_status="active",
    undo=(backing_up.discard_object,),
)

RESTORE = Pipeline(
    steps=(
        restores.plan_restore,
        restores.pause_writes,
        restores.fetch_and_load,
        restores.harden_restored,
        restores.compare_manifest,
        restores.switch_placement,
        restores.migrate_restored,
        restores.remove_old_copy,
        restores.resume_writes,
    ),
    finish=catalog.KEEP_STATUS,
    fail=restores.abort_restore,
    in_flight_status="active",
    undo=(restores.discard_restored,),
)

# a restore drill into a scratch database, dropped afterwards; the tenant is not touched
VERIFY = Pipeline(
    steps=(drills.drill_restore, drills.drill_compare, drills.drop_scratch, drills.record_drill),
    finish=catalog.KEEP_STATUS,
    fail=drills.mark_drill_failed,
    in_flight_status="active",
    undo=(drills.drop_scratch,),
)

# a new tenant made from a backup of any tier (clones.py); fails like a create
CLONE = Pipeline(
    steps=clones.STEPS,
    finish=catalog.ACTIVATE_TENANT,
    fail=clones.fail_clone,
    undo=(clones.drop_clone_scratch,),
)

# a deleted tenant brought back from one of its backups under its id (revivals.py): a clone onto itself
REVIVE = Pipeline(
    steps=revivals.STEPS,
    finish=catalog.ACTIVATE_TENANT,
    fail=revivals.fail_revival,
    undo=(clones.drop_clone_scratch,),
)

# erasure of a deleted tenant (erasure.py): whatever its tier was, nothing of it is on a server any more
ERASE = Pipeline(
    steps=erasure.STEPS,
    finish=erasure.FINISH,
    fail=erasure.erasure_failed,
    in_flight_status="deleted",
)

# the operations whose steps are handed the backup store and keys (runner.py); a move and a delete
# are handed them too when BACKUP_BEFORE_MOVE / BACKUP_BEFORE_DELETE asks for a backup first
BACKUP_KINDS = frozenset({"backup_tenant", "restore_tenant", "verify_backup", "clone_tenant", "revive_tenant",
                          "erase_tenant"})


async def queue_asked_erasure(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """`DELETE ...?erase=true`: the erasure recorded with the delete is queued as the delete ends,
    in its transaction, so it starts even if nobody is there to ask for it any more."""
    await queue.enqueue_asked_erasure(conn, ctx.tenant_id)


def _lifecycles(tier: TierManager) -> dict[str, Pipeline]:
    return {
        "create_tenant": Pipeline(steps=(catalog.place_tenant, *tier.create), finish=catalog.ACTIVATE_TENANT),
        # with BACKUP_BEFORE_DELETE, a backup first (else that step does nothing); last, the rate
        # limiter's windows (the finish's announcement drops the placement copy)
        "delete_tenant": Pipeline(steps=(backing_up.backup_before_delete, *tier.delete, rate_limits.purge_rate_limits),
                                  finish=catalog.MARK_TENANT_DELETED,
                                  in_flight_status="deleting",
                                  then=queue_asked_erasure),
        # a migration leaves the tenant's status alone, also when it fails (it keeps serving its revision)
        "migrate_tenant": Pipeline(steps=tier.migrate, finish=catalog.KEEP_STATUS, fail=catalog.keep_status,
                                   in_flight_status="active"),
        "move_tenant": MOVE,  # from this tier to any
        "backup_tenant": BACKUP,  # each tier dumps its own way (tier.dump)
        "restore_tenant": RESTORE,  # each tier restores its own way (tier.restore)
        "verify_backup": VERIFY,  # of a backup of any tier, whatever the tenant's tier is now
        "clone_tenant": CLONE,  # made on this tier from a backup of any tier
        "revive_tenant": REVIVE,  # a deleted tenant of this tier, from one of its backups of any tier
        "erase_tenant": ERASE,  # of a deleted tenant of this tier
    }


PIPELINES: dict[tuple[str, str], Pipeline] = {
    (kind, name.value): pipeline for name, tier in TIERS.items() for kind, pipeline in _lifecycles(tier).items()}


def pipeline_for(kind: str, tier: str) -> Pipeline:
    return PIPELINES[(kind, tier)]


def in_flight_status(kind: str) -> str | None:
    """The status a failed tenant returns to when an operation of this kind is retried."""
    for (k, _), pipeline in PIPELINES.items():
        if k == kind and pipeline.fail in (catalog.mark_tenant_failed, clones.fail_clone, revivals.fail_revival):
            return pipeline.in_flight_status
    return None
