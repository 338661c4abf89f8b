"""What every tier does on a database server, behind one protocol (in the spirit of stancl/tenancy's
TenantDatabaseManager): the steps that create, delete and migrate a tenant, and what a move asks of
a tier as its source or its target. Names, login and binding are the tier's layout (contracts/tiers.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from contracts.tiers import TierLayout
from provisioning.backups.manifest import Manifest
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

    def dump(self, side: StepContext) -> AbstractAsyncContextManager[Dump]:
        """The tenant's data here in one snapshot: the manifest (counts, checksums, revision) and
        the payload stream (pg_dump -Fc of the database or schema, or the shared-tier archive)."""

    restore: TierRestore  # how a backup is put back in place here (provisioning/tiers/snapshots.py)


@dataclass
class Dump:
    payload: int  # crypto.PAYLOAD_PG_DUMP | crypto.PAYLOAD_SHARED_ARCHIVE
    chunks: AsyncIterator[bytes]
    manifest: Manifest | None  # the shared archive's is known once its first chunk has passed


class TierRestore(Protocol):
    """A restore in place, in steps a rerun can repeat: `load` puts the backup into a new copy
    beside the tenant's (or, on the shared tier, replaces the rows in one transaction), `harden`
    gives it the tier's grants, `compare` says how it differs from the manifest, `swap` makes it
    the tenant's (the old copy set aside), `drop_old` removes the old copy, `discard` undoes a
    restore that failed before its swap."""

    async def load(self, side: StepContext, chunks: AsyncIterator[bytes], recorded: Manifest) -> None: ...
    async def harden(self, side: StepContext) -> None: ...
    async def compare(self, side: StepContext, recorded: Manifest) -> list[str]: ...
    async def swap(self, side: StepContext) -> None: ...
    async def drop_old(self, side: StepContext) -> None: ...
    async def discard(self, side: StepContext) -> None: ...
