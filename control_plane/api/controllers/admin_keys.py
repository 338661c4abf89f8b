"""Admin API keys: create (the token shown once), list, revoke. Only an `admin` key may."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import AdminKeyCreated, AdminKeyList, AdminKeyOut, CreateAdminKey
from control_plane.services.admin_keys import AdminKeyService


class AdminKeyController(Controller):
    path = "/v1/admin-keys"
    tags = ["admin keys"]
    opt = {"area": "admin"}

    @post("/", status_code=201, summary="Create an admin key with scopes and an optional expiry; the token is shown once")
    async def create(self, request: Request, data: JSONBody[CreateAdminKey],
                     admin_keys: NamedDependency[AdminKeyService]) -> AdminKeyCreated:
        return await admin_keys.create(actor(request), data)

    @get("/", summary="Admin keys (never their tokens)")
    async def list_keys(self, admin_keys: NamedDependency[AdminKeyService]) -> AdminKeyList:
        return await admin_keys.list()

    @post("/{name:str}/revoke", status_code=200, summary="Revoke an admin key")
    async def revoke(self, request: Request, name: Annotated[str, Parameter(max_length=63)],
                     admin_keys: NamedDependency[AdminKeyService]) -> AdminKeyOut:
        return await admin_keys.revoke(actor(request), name)
