"""What a provisioning step is given: the operation, the catalog, and the means to reach servers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from contracts import identifiers
from contracts.tiers import layout_of
from migrations.tree import TenantTree
from provisioning.sealing import SecretBox
from provisioning.servers import AdminSessions, ServerInfo, load_server


@dataclass
class StepContext:
    operation_id: uuid.UUID
    tenant_id: uuid.UUID
    params: dict[str, Any]
    catalog: asyncpg.Pool
    secret_key: str
    box: SecretBox
    announce: Callable[[uuid.UUID], Awaitable[None]]  # tell routers the tenant's placement changed
    tenant_tree: TenantTree  # the worker's tenant revisions (WorkerConfig.tenant_tree): what every step migrates to
    tier: str = "dedicated"
    _server: ServerInfo | None = field(default=None, repr=False)
    # where admin sessions come from and go back to (the worker's, kept between operations; a
    # context of its own when none is given)
    sessions: AdminSessions | None = field(default=None, repr=False)
    # one admin session per server for the whole run of the operation, shared by its steps (and by
    # the contexts `dataclasses.replace()` derives from this one); given back by close()
    _taken: dict[ServerInfo, asyncpg.Connection] = field(default_factory=dict, repr=False)
    # what create_database knows of the copy it made (its revision), for the step after it;
    # in memory only: after a restart the next step asks the database instead
    copied_revision: str | None = None
    spare_claimed: bool = False
    # the backup store and the tenants' keys (provisioning/backups/kit.py), for backup and restore steps
    backups: Any = field(default=None, repr=False)
    # where routers' shared keys live (erasure purges a tenant's keys there); None: no Redis
    redis_url: str | None = None
    # the Stripe customers' eraser (provisioning/erasure_stripe.py: StripeCustomers) the worker was
    # handed by its composer; None: no STRIPE_API_KEY
    customers: Any = field(default=None, repr=False)

    @property
    def database(self) -> str:
        return layout_of(self.tier).names(self.tenant_id).database

    @property
    def role(self) -> str:
        """The tenant's own role (dedicated: logs in; schema: reached with SET ROLE)."""
        return identifiers.tenant_role(self.tenant_id)

    @property
    def schema(self) -> str:
        return identifiers.tenant_schema(self.tenant_id)

    @property
    def target_revision(self) -> str:
        """The tenant revision this operation migrates to (a fleet migration names one)."""
        return self.params.get("target") or self.tenant_tree.head()

    async def server(self) -> ServerInfo:
        """The server the tenant is placed on (the placement row is written by `place_tenant`)."""
        server = await self.server_or_none()
        if server is None:
            raise LookupError(f"tenant {self.tenant_id} has no placement")
        return server

    def placed_on(self, server: ServerInfo) -> None:
        """The server `place_tenant` just placed the tenant on (saves the next step a lookup)."""
        self._server = server

    async def server_or_none(self) -> ServerInfo | None:
        if self._server is None:
            server_id = await self.catalog.fetchval(
                "SELECT server_id FROM placements WHERE tenant_id = $1", self.tenant_id)
            if server_id is not None:
                self._server = await load_server(self.catalog, server_id)
        return self._server

    async def admin(self, server: ServerInfo | None = None) -> asyncpg.Connection:
        """An admin session on the admin database of the tenant's server (or of `server`), taken
        once per operation run and shared by its steps: every SCRAM connect saved is a few
        milliseconds of a tenant's creation. Only the admin database: a session kept open in a
        tenant database would stand in the way of renaming, copying or dropping it."""
        server = server or await self.server()
        conn = self._taken.get(server)
        if conn is None or conn.is_closed():
            if self.sessions is None:
                self.sessions = AdminSessions(self.box, keep=0)
            conn = self._taken[server] = await self.sessions.acquire(server)
        return conn

    async def close(self) -> None:
        """End of the operation's run (also after a failed step): the sessions go back, clean."""
        taken = list(self._taken.items())
        self._taken.clear()
        for server, conn in taken:
            await self.sessions.release(server, conn)  # type: ignore[union-attr]
