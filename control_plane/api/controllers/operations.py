"""Operations: the fleet's list, one with its steps (optionally held until it ends), and the retry of a failed one."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import OperationOut, OperationPage
from control_plane.services.operation_waits import MAX_WAIT_SECONDS, OperationWaits
from control_plane.services.operations import OperationService

OperationState = Literal["queued", "running", "succeeded", "failed"]


class OperationController(Controller):
    path = "/v1/operations"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["operations"]

    @get("/", summary="Operations across the fleet, newest first (filter by state, kind, tenant)")
    async def list_operations(
        self, operations: NamedDependency[OperationService],
        # `state` is a name Litestar keeps for the app state; the query parameter is still `state`
        op_state: Annotated[OperationState | None, Parameter(query="state")] = None,
        kind: Annotated[str | None, Parameter(max_length=32, pattern=r"^[a-z_]+$")] = None,
        tenant: Annotated[str | None, Parameter(max_length=100, description="tenant id or slug")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> OperationPage:
        return await operations.list(state=op_state, kind=kind, tenant=tenant, limit=limit, cursor=cursor)

    @get("/{key:str}", summary="An operation and its steps; `wait` (seconds) holds the answer until it ends")
    async def get_operation(
        self, key: Annotated[str, Parameter(max_length=100)], operations: NamedDependency[OperationService],
        operation_waits: NamedDependency[OperationWaits],
        wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_SECONDS, description=(
            "seconds to wait for a queued or running operation to end (long poll); 0 answers at once"))] = 0,
    ) -> OperationOut:
        return await operation_waits.read_when_ended(functools.partial(operations.get, key), wait)

    @post("/{key:str}/cancel", status_code=202, summary=(
        "Cancel a queued or running operation: the workers end it at its next step boundary, with the "
        "pipeline's undo (it then reads failed, error `cancelled`); 409 operation_finished once it ended"))
    async def cancel(self, request: Request, key: Annotated[str, Parameter(max_length=100)],
                     operations: NamedDependency[OperationService]) -> OperationOut:
        return await operations.cancel(actor(request), key)

    @post("/{key:str}/retry", status_code=202, summary="Resume a failed operation from its failed step")
    async def retry(self, request: Request, key: Annotated[str, Parameter(max_length=100)],
                    operations: NamedDependency[OperationService]) -> OperationOut:
        return await operations.retry(actor(request), key)
