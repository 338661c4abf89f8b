"""What every tier does on a database server, behind one protocol (in the spirit of stancl/tenancy's
TenantDatabaseManager): the steps that create, delete and migrate a tenant, and what a move asks of
a tier as its source or its target. Names, login and binding are the tier's layout (contracts/tiers.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from contracts.tiers import TierLayout
from provisioning.context import StepContext
from provisioning.tiers.tables import TenantTables

# one idempotent step; its __name__ is recorded in operation_steps
Step = Callable[[StepContext], Awaitable[None]]


class TierManager(Protocol):
    layout: TierLayout
    create: tuple[Step, ...]  # after the placement is chosen (catalog.place_tenant)
    delete: tuple[Step, ...]
    migrate: tuple[Step, ...]

    async def prepare_target(self, target: StepContext, keep_login: bool) -> None:
        """The tenant's objects made at `target`'s revision for a move, before writes pause.
        `keep_login`: the tenant's role serves the old copy on this server meanwhile, by logging in."""

    async def drop_copy(self, side: StepContext, keep_role: bool) -> None:
        """The tenant's copy here removed (a move's old copy, or its half-made target).
        `keep_role`: the tenant's role serves the other copy on this server; it stays."""

    async def adopt_role(self, target: StepContext) -> None:
        """After a move on one server removed the old copy: the role the copies shared takes
        this tier's shape."""

    def tables(self, side: StepContext) -> TenantTables:
        """How the tenant's tables here are read and written for a copy."""

    # backups add `dump` and `restore` here, one per tier (the database, the schema, the rows)
