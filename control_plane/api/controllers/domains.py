"""Custom domains of a tenant."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import KeyParam, actor
from control_plane.schemas import AddDomain, DomainList, DomainOut
from control_plane.services.domains import DomainService


class DomainController(Controller):
    path = "/v1/tenants/{key:str}/domains"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["tenants"]

    @post("/", status_code=201, summary="Route a custom domain to the tenant (DOMAIN_VERIFICATION=dns: "
          "202, pending until verified)",
          responses={202: ResponseSpec(DomainOut, description="DOMAIN_VERIFICATION=dns: recorded as pending; "
                                       "create the TXT record in `challenge`, then POST .../verify")})
    async def add(self, request: Request, key: KeyParam, data: JSONBody[AddDomain],
                  domains: NamedDependency[DomainService]) -> Response[DomainOut]:
        out = await domains.add(actor(request), key, data.domain)
        # 202: recorded, not routed yet (the answer names the TXT record that proves ownership)
        return Response(out, status_code=202 if out.status == "pending" else 201)

    @post("/{domain:str}/verify", status_code=200, summary="Check a pending domain's TXT challenge; found: it routes")
    async def verify(self, request: Request, key: KeyParam, domain: Annotated[str, Parameter(max_length=253)],
                     domains: NamedDependency[DomainService]) -> DomainOut:
        return await domains.verify(actor(request), key, domain)

    @get("/", summary="The tenant's custom domains")
    async def list_domains(self, key: KeyParam, domains: NamedDependency[DomainService]) -> DomainList:
        return await domains.list(key)

    @delete("/{domain:str}", status_code=204, summary="Stop routing a custom domain")
    async def remove(self, request: Request, key: KeyParam, domain: Annotated[str, Parameter(max_length=253)],
                     domains: NamedDependency[DomainService]) -> None:
        await domains.remove(actor(request), key, domain)
