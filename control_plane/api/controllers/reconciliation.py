"""The reconciler's reports: the latest scheduled one, or a run on demand."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency

from control_plane import errors
from provisioning.reconcile import Report, reconcile_and_store
from provisioning.sealing import SecretBox


class ReconciliationService:
    def __init__(self, catalog_dsn: str, box: SecretBox) -> None:
        self.catalog_dsn = catalog_dsn
        self.box = box

    async def run(self) -> Report:
        conn = await asyncpg.connect(self.catalog_dsn)
        try:
            return await reconcile_and_store(conn, self.box)  # type: ignore[arg-type]
        finally:
            await conn.close()

    async def latest(self) -> Any:
        conn = await asyncpg.connect(self.catalog_dsn)
        try:
            raw = await conn.fetchval("SELECT report FROM reconciliation_reports ORDER BY id DESC LIMIT 1")
        finally:
            await conn.close()
        if raw is None:
            raise errors.NotFound("the reconciler has not run yet; POST /v1/reconciliation runs it now")
        return msgspec.json.decode(raw, type=Report)


class ReconciliationController(Controller):
    path = "/v1/reconciliation"
    tags = ["reconciliation"]

    @get("/", summary="The latest reconciliation report (catalog vs servers)")
    async def latest(self, reconciliation: NamedDependency[ReconciliationService]) -> Report:
        return await reconciliation.latest()

    @post("/", status_code=200, summary="Compare the catalog with every server now; drops nothing")
    async def run(self, reconciliation: NamedDependency[ReconciliationService]) -> Report:
        return await reconciliation.run()
