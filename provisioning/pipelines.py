"""Each lifecycle as a readable tuple of idempotent steps, plus the catalog change that finishes it
(run in the same transaction that marks the operation succeeded, so a tenant is never `active`
while its operation still looks open) and the one that records a permanent failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from provisioning.context import StepContext
from provisioning.steps import catalog, dedicated, move, schema, shared

Step = Callable[[StepContext], Awaitable[None]]
Finish = Callable[[asyncpg.Connection, StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    finish: catalog.CatalogChange  # run in the statement that marks the operation succeeded
    fail: Finish = catalog.mark_tenant_failed
    in_flight_status: str = "provisioning"  # the tenant's status while the operation runs (or is retried)
    undo: tuple[Step, ...] = ()  # best effort, after a final failure (e.g. drop a half-made copy)

    @property
    def step_names(self) -> list[str]:
        return [step.__name__ for step in self.steps]


CREATE_DEDICATED = Pipeline(
    steps=(
        catalog.place_tenant,
        dedicated.ensure_template,
        dedicated.create_role,
        dedicated.create_database,
        dedicated.migrate_copy,
        dedicated.harden_database,
    ),
    finish=catalog.ACTIVATE_TENANT,
)

DELETE_DEDICATED = Pipeline(
    steps=(
        dedicated.block_connections,
        dedicated.terminate_connections,
        dedicated.drop_database,
        dedicated.drop_role,
    ),
    finish=catalog.MARK_TENANT_DELETED,
    in_flight_status="deleting",
)

CREATE_SCHEMA = Pipeline(
    steps=(
        catalog.place_tenant,
        schema.ensure_schemas_database,
        dedicated.create_role,  # NOLOGIN on this tier
        schema.create_schema,
        schema.migrate_tenant_schema,
        schema.grant_schema_privileges,
    ),
    finish=catalog.ACTIVATE_TENANT,
)

DELETE_SCHEMA = Pipeline(
    steps=(schema.revoke_gateway, schema.drop_tenant_schema, dedicated.drop_role),
    finish=catalog.MARK_TENANT_DELETED,
    in_flight_status="deleting",
)

CREATE_SHARED = Pipeline(
    steps=(
        catalog.place_tenant,
        shared.ensure_shared_database,
        shared.migrate_shared_database,
        shared.grant_shared_privileges,
    ),
    finish=catalog.ACTIVATE_TENANT,
)

DELETE_SHARED = Pipeline(
    steps=(shared.delete_tenant_rows,),
    finish=catalog.MARK_TENANT_DELETED,
    in_flight_status="deleting",
)

# a migration leaves the tenant's status alone, also when it fails (it keeps serving its revision)
MIGRATE_DEDICATED = Pipeline(steps=(dedicated.migrate_schema,), finish=catalog.KEEP_STATUS,
                             fail=catalog.keep_status, in_flight_status="active")
MIGRATE_SCHEMA = Pipeline(steps=(schema.migrate_tenant_schema,), finish=catalog.KEEP_STATUS,
                          fail=catalog.keep_status, in_flight_status="active")
MIGRATE_SHARED = Pipeline(steps=(shared.migrate_shared_database,), finish=catalog.KEEP_STATUS,
                          fail=catalog.keep_status, in_flight_status="active")

MOVE = Pipeline(
    steps=(
        move.plan_move,
        move.prepare_target,  # before the pause: writes wait only for the copy itself
        move.pause_writes,
        move.copy_data,
        move.verify_copy,
        move.switch_placement,
        move.remove_old_copy,
    ),
    finish=catalog.KEEP_STATUS,
    fail=move.abort_move,
    in_flight_status="active",
    undo=(move.discard_target,),
)

PIPELINES: dict[tuple[str, str], Pipeline] = {
    ("create_tenant", "dedicated"): CREATE_DEDICATED,
    ("delete_tenant", "dedicated"): DELETE_DEDICATED,
    ("create_tenant", "schema"): CREATE_SCHEMA,
    ("delete_tenant", "schema"): DELETE_SCHEMA,
    ("create_tenant", "shared"): CREATE_SHARED,
    ("delete_tenant", "shared"): DELETE_SHARED,
    ("migrate_tenant", "dedicated"): MIGRATE_DEDICATED,
    ("migrate_tenant", "schema"): MIGRATE_SCHEMA,
    ("migrate_tenant", "shared"): MIGRATE_SHARED,
    ("move_tenant", "dedicated"): MOVE,
    ("move_tenant", "schema"): MOVE,
    ("move_tenant", "shared"): MOVE,
}


def pipeline_for(kind: str, tier: str) -> Pipeline:
    return PIPELINES[(kind, tier)]


def in_flight_status(kind: str) -> str | None:
    """The status a failed tenant returns to when an operation of this kind is retried."""
    for (k, _), pipeline in PIPELINES.items():
        if k == kind and pipeline.fail is catalog.mark_tenant_failed:
            return pipeline.in_flight_status
    return None

