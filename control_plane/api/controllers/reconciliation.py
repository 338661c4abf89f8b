"""The reconciler's reports: the latest scheduled one, or a run on demand."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency

from control_plane.services.reconciliation import ReconciliationService
from provisioning.reconcile import Report


class ReconciliationController(Controller):
    path = "/v1/reconciliation"
    opt = {"area": "servers"}  # the scopes it needs: control_plane/scopes.py
    tags = ["reconciliation"]

    @get("/", summary="The latest reconciliation report (catalog vs servers)",
         opt={"problems": (404,)})  # none yet (documented: control_plane/api/docs.py)
    async def latest(self, reconciliation: NamedDependency[ReconciliationService]) -> Report:
        return await reconciliation.latest()

    @post("/", status_code=200, summary="Compare the catalog with every server now; drops nothing")
    async def run(self, reconciliation: NamedDependency[ReconciliationService]) -> Report:
        return await reconciliation.run()
