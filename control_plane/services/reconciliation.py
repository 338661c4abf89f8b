"""The reconciler's reports: a run now (stored as the latest), or the latest stored one."""

from __future__ import annotations

import functools

import asyncpg
import msgspec

from control_plane import errors
from control_plane.catalog.db import CONNECT_TIMEOUT
from provisioning.backups.kit import store_url
from provisioning.backups.store import open_store
from provisioning.kms_leftovers import account
from provisioning.reconcile import Report, reconcile_and_store
from provisioning.sealing import SecretBox


class ReconciliationService:
    def __init__(self, catalog_dsn: str, box: SecretBox, *, backup_store_url: str | None = None,
                 redis_url: str | None = None, kms_key_per_tenant: bool = False) -> None:
        self.catalog_dsn = catalog_dsn
        self.box = box
        # the store and Redis are searched for what deleted and erased tenants left (leftovers.py)
        self.open_store = functools.partial(open_store, store_url(backup_store_url))
        self.redis_url = redis_url
        self.tenant_kms = account(kms_key_per_tenant)  # the KMS account listed, with per-tenant keys only

    async def run(self) -> Report:
        conn = await asyncpg.connect(self.catalog_dsn, timeout=CONNECT_TIMEOUT)
        try:
            return await reconcile_and_store(conn, self.box, open_store=self.open_store,  # type: ignore[arg-type]
                                             redis_url=self.redis_url, tenant_kms=self.tenant_kms)
        finally:
            await conn.close()

    async def latest(self) -> Report:
        conn = await asyncpg.connect(self.catalog_dsn, timeout=CONNECT_TIMEOUT)
        try:
            raw = await conn.fetchval("SELECT report FROM reconciliation_reports ORDER BY id DESC LIMIT 1")
        finally:
            await conn.close()
        if raw is None:
            raise errors.NotFound("the reconciler has not run yet; POST /v1/reconciliation runs it now")
        return msgspec.json.decode(raw, type=Report)
