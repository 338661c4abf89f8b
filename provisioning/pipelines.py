"""Each lifecycle as a readable tuple of idempotent steps, plus the catalog change that finishes it
(run in the same transaction that marks the operation succeeded, so a tenant is never `active`
while its operation still looks open) and the one that records a permanent failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from provisioning.context import StepContext
from provisioning.steps import catalog, dedicated

Step = Callable[[StepContext], Awaitable[None]]
Finish = Callable[[asyncpg.Connection, StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    finish: Finish
    fail: Finish = catalog.mark_tenant_failed
    in_flight_status: str = "provisioning"  # the tenant's status while the operation runs (or is retried)

    @property
    def step_names(self) -> list[str]:
        return [step.__name__ for step in self.steps]


CREATE_DEDICATED = Pipeline(
    steps=(
        catalog.place_tenant,
        dedicated.ensure_template,
        dedicated.create_role,
        dedicated.create_database,
        dedicated.migrate_schema,
        dedicated.harden_database,
    ),
    finish=catalog.activate_tenant,
)

DELETE_DEDICATED = Pipeline(
    steps=(
        dedicated.block_connections,
        dedicated.terminate_connections,
        dedicated.drop_database,
        dedicated.drop_role,
    ),
    finish=catalog.mark_tenant_deleted,
    in_flight_status="deleting",
)

PIPELINES: dict[str, Pipeline] = {
    "create_tenant": CREATE_DEDICATED,
    "delete_tenant": DELETE_DEDICATED,
}

# The channel on which the control plane wakes workers when it queues an operation (NOTIFY is
# delivered at commit, so a worker never sees an operation before it exists).
WAKE_CHANNEL = "tenantplane_operations"
