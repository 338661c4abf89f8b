"""Tenants: create, list, read, rename, suspend or resume, move, delete (and erase)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from contracts.placement import TenantStatus
from control_plane.api.controllers.params import KeyParam, actor
from control_plane.schemas import (
    CreateTenant,
    DeleteAccepted,
    MoveTenant,
    OperationList,
    TenantAccepted,
    TenantOut,
    TenantPage,
    UpdateTenant,
)
from control_plane.services.operations import OperationService
from control_plane.services.tenants import TenantService


class TenantController(Controller):
    path = "/v1/tenants"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["tenants"]

    @post("/", status_code=202, summary="Create a tenant (provisioned asynchronously)")
    async def create(self, request: Request, data: JSONBody[CreateTenant], tenants: NamedDependency[TenantService]) -> TenantAccepted:
        return await tenants.create(actor(request), data)

    @get("/", summary="List tenants")
    async def list_tenants(
        self,
        tenants: NamedDependency[TenantService],
        status: TenantStatus | None = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> TenantPage:
        return await tenants.list(status.value if status else None, limit, cursor)

    @get("/{key:str}", summary="Get a tenant by id or slug")
    async def get_tenant(self, key: KeyParam, tenants: NamedDependency[TenantService]) -> TenantOut:
        return await tenants.get(key)

    @patch("/{key:str}", summary="Rename, suspend or resume a tenant")
    async def update(self, request: Request, key: KeyParam, data: JSONBody[UpdateTenant],
                     tenants: NamedDependency[TenantService]) -> TenantOut:
        return await tenants.update(actor(request), key, data)

    @get("/{key:str}/operations", summary="The tenant's operations, newest first")
    async def list_operations(self, key: KeyParam, operations: NamedDependency[OperationService]) -> OperationList:
        return await operations.list_for_tenant(key)

    @post("/{key:str}/move", status_code=202, summary="Move the tenant to another tier and/or server")
    async def move(self, request: Request, key: KeyParam, data: JSONBody[MoveTenant],
                   tenants: NamedDependency[TenantService]) -> TenantAccepted:
        return await tenants.move(actor(request), key, data)

    @delete("/{key:str}", status_code=202, summary="Delete a tenant (asynchronously), and with erase=true erase it",
            description="Offboards the tenant (its data dropped, domains released, Stripe subscription "
                        "cancelled; backups kept). With `erase=true` its erasure is recorded in the same "
                        "transaction and queued by the delete's finish, so it starts when the delete ends "
                        "even if the API is gone by then: `erasure_id` is that erasure's operation (it "
                        "exists once the delete has ended) and `GET /v1/tenants/{key}/erasure` its report. "
                        "A tenant deleted already (by id): without `erase`, 404 `tenant_not_found`; with "
                        "it, its erasure as `POST /v1/tenants/{key}/erasure` starts it (or the one asked "
                        "before), beside the delete that was done. 409 `operation_in_progress` or "
                        "`invalid_transition`, 422 `validation_failed` for an `erase` that is not a boolean.")
    async def delete_tenant(self, request: Request, key: KeyParam, tenants: NamedDependency[TenantService],
                            erase: Annotated[bool, Parameter(description="erase the tenant once it is deleted")] = False,
                            ) -> DeleteAccepted:
        accepted = await tenants.delete(actor(request), key, erase=erase)
        request.app.state.billing.cancellations.wake()  # its Stripe subscription is cancelled now
        return accepted
