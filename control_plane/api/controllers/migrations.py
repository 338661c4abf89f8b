"""Fleet migrations."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import MigrationRunOut, StartMigration
from control_plane.services.migrations import MigrationService


class MigrationController(Controller):
    path = "/v1/migrations"
    tags = ["migrations"]

    @post("/", status_code=202, summary="Migrate every tenant (or a selection) to a revision, canary first")
    async def start(self, request: Request, data: JSONBody[StartMigration],
                    migrations: NamedDependency[MigrationService]) -> MigrationRunOut:
        return await migrations.start(actor(request), data)

    @get("/{key:str}", summary="A fleet migration's progress and per-tenant report")
    async def get_run(self, key: Annotated[str, Parameter(max_length=100)],
                      migrations: NamedDependency[MigrationService]) -> MigrationRunOut:
        return await migrations.get(key)
