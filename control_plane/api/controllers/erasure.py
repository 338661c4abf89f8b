"""Erasure of a deleted tenant: request it, read its report (control_plane/services/erasure.py)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency

from control_plane.api.controllers.params import KeyParam, actor
from control_plane.schemas import ErasureReport
from control_plane.services.erasure import ErasureService


class ErasureController(Controller):
    path = "/v1/tenants"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["erasure"]

    @post("/{key:str}/erasure", status_code=202,
          summary="Erase a deleted tenant: backups, keys, Redis keys and personal data (asynchronously)",
          description="202 with the report when the erasure was queued now; 200 with the same report "
                      "when it was asked for before (running or completed).")
    async def request_erasure(self, request: Request, key: KeyParam,
                              erasure: NamedDependency[ErasureService]) -> Response[ErasureReport]:
        report, queued = await erasure.request(actor(request), key)
        return Response(report, status_code=202 if queued else 200)

    @get("/{key:str}/erasure", summary="The tenant's erasure report")
    async def report(self, key: KeyParam, erasure: NamedDependency[ErasureService]) -> ErasureReport:
        return await erasure.report(key)
