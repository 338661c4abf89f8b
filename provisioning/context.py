"""What a provisioning step is given: the operation, the catalog, and the means to reach servers."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from provisioning import identifiers
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, load_server


@dataclass
class StepContext:
    operation_id: uuid.UUID
    tenant_id: uuid.UUID
    params: dict[str, Any]
    catalog: asyncpg.Pool
    secret_key: str
    box: SecretBox
    announce: Callable[[uuid.UUID], Awaitable[None]]  # tell routers the tenant's placement changed
    tier: str = "dedicated"
    _server: ServerInfo | None = field(default=None, repr=False)

    @property
    def database(self) -> str:
        return identifiers.placement_names(self.tier, self.tenant_id)[0]

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
        from migrations import runner

        return self.params.get("target") or runner.head("tenant")

    async def server(self) -> ServerInfo:
        """The server the tenant is placed on (the placement row is written by `place_tenant`)."""
        server = await self.server_or_none()
        if server is None:
            raise LookupError(f"tenant {self.tenant_id} has no placement")
        return server

    async def server_or_none(self) -> ServerInfo | None:
        if self._server is None:
            server_id = await self.catalog.fetchval(
                "SELECT server_id FROM placements WHERE tenant_id = $1", self.tenant_id)
            if server_id is not None:
                self._server = await load_server(self.catalog, server_id)
        return self._server
