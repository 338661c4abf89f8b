"""Database servers: register, list, cordon, uncordon, drain."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import DrainResult, RegisterServer, ServerList, ServerOut
from control_plane.services.servers import ServerService


class ServerController(Controller):
    path = "/v1/database-servers"
    opt = {"area": "servers"}  # the scopes it needs: control_plane/scopes.py
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
