"""What platform admins look at across the fleet: the audit log and the overview."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from control_plane.schemas import AuditPage, Overview
from control_plane.services.audit import AuditService
from control_plane.services.overview import OverviewService

_NAME = r"^[^\x00-\x1f\x7f]+$"  # actors and actions: no control characters (they reach logs)


class AuditController(Controller):
    path = "/v1/audit"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["audit"]

    @get("/", summary="Audit entries newest first, by tenant, actor, action and time")
    async def list_audit(
        self, audit: NamedDependency[AuditService],
        tenant: Annotated[str | None, Parameter(max_length=100, description="tenant id or slug")] = None,
        actor: Annotated[str | None, Parameter(max_length=100, pattern=_NAME)] = None,
        action: Annotated[str | None, Parameter(max_length=64, pattern=_NAME)] = None,
        since: Annotated[dt.datetime | None, Parameter(description="entries at or after this time (RFC 3339)")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> AuditPage:
        return await audit.list(tenant=tenant, actor=actor, action=action, since=since, limit=limit, cursor=cursor)


class OverviewController(Controller):
    path = "/v1/overview"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["overview"]

    @get("/", summary="The fleet at a glance: tenants by status and tier, behind head, operations, server fill")
    async def overview(self, overview: NamedDependency[OverviewService]) -> Overview:
        return await overview.get()
