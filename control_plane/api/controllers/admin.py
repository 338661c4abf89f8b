"""Thin controllers: decode → service → encode."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from contracts.placement import TenantStatus
from control_plane.schemas import (
    CreateTenant,
    DrainResult,
    MoveTenant,
    OperationList,
    OperationOut,
    RegisterServer,
    ServerList,
    ServerOut,
    TenantAccepted,
    TenantOut,
    TenantPage,
    UpdateTenant,
)
from control_plane.services.operation_waits import (
    MAX_WAIT_SECONDS,
    OPEN_STATES,
    RECHECK_SECONDS,
    OperationWaits,
)
from control_plane.services.operations import OperationService
from control_plane.services.servers import ServerService
from control_plane.services.tenants import TenantService

KeyParam = Annotated[str, Parameter(max_length=100, description="tenant id or slug")]


def actor(request: Request) -> str:
    return request.state.actor


class TenantController(Controller):
    path = "/v1/tenants"
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
    async def update(self, request: Request, key: KeyParam, data: JSONBody[UpdateTenant], tenants: NamedDependency[TenantService]) -> TenantOut:
        return await tenants.update(actor(request), key, data)

    @get("/{key:str}/operations", summary="The tenant's operations, newest first")
    async def list_operations(self, key: KeyParam, operations: NamedDependency[OperationService]) -> OperationList:
        return await operations.list_for_tenant(key)

    @post("/{key:str}/move", status_code=202, summary="Move the tenant to another tier and/or server")
    async def move(self, request: Request, key: KeyParam, data: JSONBody[MoveTenant],
                   tenants: NamedDependency[TenantService]) -> TenantAccepted:
        return await tenants.move(actor(request), key, data)

    @delete("/{key:str}", status_code=202, summary="Delete a tenant (asynchronously)")
    async def delete_tenant(self, request: Request, key: KeyParam, tenants: NamedDependency[TenantService]) -> TenantAccepted:
        return await tenants.delete(actor(request), key)


class OperationController(Controller):
    path = "/v1/operations"
    tags = ["operations"]

    @get("/{key:str}", summary="An operation and its steps; `wait` (seconds) holds the answer until it ends")
    async def get_operation(
        self, key: Annotated[str, Parameter(max_length=100)], operations: NamedDependency[OperationService],
        operation_waits: NamedDependency[OperationWaits],
        wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_SECONDS, description=(
            "seconds to wait for a queued or running operation to end (long poll); 0 answers at once"))] = 0,
    ) -> OperationOut:
        op = await operations.get(key)  # 404 for an unknown id, before anything waits
        if wait <= 0 or op.state not in OPEN_STATES:
            return op
        deadline = time.monotonic() + wait
        await operation_waits.listen()
        with operation_waits.watch(op.id) as ended:
            op = await operations.get(key)  # again, now that its notification cannot be missed
            while op.state in OPEN_STATES and (remaining := deadline - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), min(remaining, RECHECK_SECONDS))
                ended.clear()
                op = await operations.get(key)
        return op

    @post("/{key:str}/retry", status_code=202, summary="Resume a failed operation from its failed step")
    async def retry(self, request: Request, key: Annotated[str, Parameter(max_length=100)],
                    operations: NamedDependency[OperationService]) -> OperationOut:
        return await operations.retry(actor(request), key)


class ServerController(Controller):
    path = "/v1/database-servers"
    tags = ["database servers"]

    @post("/", status_code=201, summary="Register a database server")
    async def register(self, request: Request, data: JSONBody[RegisterServer], servers: NamedDependency[ServerService]) -> ServerOut:
        return await servers.register(actor(request), data)

    @get("/", summary="List database servers")
    async def list_servers(self, servers: NamedDependency[ServerService]) -> ServerList:
        return await servers.list()

    @post("/{name:str}/cordon", status_code=200, summary="Place no new tenants on this server")
    async def cordon(self, request: Request, name: Annotated[str, Parameter(max_length=63)],
                     servers: NamedDependency[ServerService]) -> ServerOut:
        return await servers.set_status(actor(request), name, "cordoned")

    @post("/{name:str}/uncordon", status_code=200, summary="Place new tenants on this server again")
    async def uncordon(self, request: Request, name: Annotated[str, Parameter(max_length=63)],
                       servers: NamedDependency[ServerService]) -> ServerOut:
        return await servers.set_status(actor(request), name, "active")

    @post("/{name:str}/drain", status_code=202, summary="Cordon the server and move its tenants away")
    async def drain(self, request: Request, name: Annotated[str, Parameter(max_length=63)],
                    servers: NamedDependency[ServerService]) -> DrainResult:
        return await servers.drain(actor(request), name)
