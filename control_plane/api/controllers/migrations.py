"""Fleet migrations: start one, list the runs, read one."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import MigrationRunOut, MigrationRunPage, StartMigration
from control_plane.services.migrations import MigrationService


class MigrationController(Controller):
    path = "/v1/migrations"
    opt = {"area": "servers"}  # the scopes it needs: control_plane/scopes.py
    tags = ["migrations"]

    @post("/", status_code=202, summary="Migrate every tenant (or a selection) to a revision, canary first")
    async def start(self, request: Request, data: JSONBody[StartMigration],
                    migrations: NamedDependency[MigrationService]) -> MigrationRunOut:
        return await migrations.start(actor(request), data)

    @get("/", summary="Fleet migration runs, newest first, with their per-state tenant counts")
    async def list_runs(
        self, migrations: NamedDependency[MigrationService],
        # `state` is a name Litestar keeps for the app state; the query parameter is still `state`
        run_state: Annotated[Literal["running", "succeeded", "failed", "halted"] | None,
                             Parameter(query="state")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> MigrationRunPage:
        return await migrations.list(state=run_state, limit=limit, cursor=cursor)

    @get("/{key:str}", summary="A fleet migration's progress and per-tenant report")
    async def get_run(self, key: Annotated[str, Parameter(max_length=100)],
                      migrations: NamedDependency[MigrationService]) -> MigrationRunOut:
        return await migrations.get(key)
