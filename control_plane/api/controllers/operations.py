"""Operations: one with its steps (optionally held until it ends), and the retry of a failed one."""

from __future__ import annotations

import functools
from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import OperationOut
from control_plane.services.operation_waits import MAX_WAIT_SECONDS, OperationWaits
from control_plane.services.operations import OperationService


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
        return await operation_waits.read_when_ended(functools.partial(operations.get, key), wait)

    @post("/{key:str}/retry", status_code=202, summary="Resume a failed operation from its failed step")
    async def retry(self, request: Request, key: Annotated[str, Parameter(max_length=100)],
                    operations: NamedDependency[OperationService]) -> OperationOut:
        return await operations.retry(actor(request), key)
