"""Custom domains of a tenant."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.schemas import AddDomain, DomainList, DomainOut
from control_plane.services.domains import DomainService

Key = Annotated[str, Parameter(max_length=100, description="tenant id or slug")]


class DomainController(Controller):
    path = "/v1/tenants/{key:str}/domains"
    tags = ["tenants"]

    @post("/", status_code=201, summary="Route a custom domain to the tenant")
    async def add(self, request: Request, key: Key, data: JSONBody[AddDomain],
                  domains: NamedDependency[DomainService]) -> DomainOut:
        return await domains.add(request.state.actor, key, data.domain)

    @get("/", summary="The tenant's custom domains")
    async def list_domains(self, key: Key, domains: NamedDependency[DomainService]) -> DomainList:
        return await domains.list(key)

    @delete("/{domain:str}", status_code=204, summary="Stop routing a custom domain")
    async def remove(self, request: Request, key: Key, domain: Annotated[str, Parameter(max_length=253)],
                     domains: NamedDependency[DomainService]) -> None:
        await domains.remove(request.state.actor, key, domain)
