"""Fleet migrations from the admin side: start a run, read its progress and per-tenant report.
The run itself is coordinated by the workers (provisioning/fanout.py)."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec

from control_plane import errors
from control_plane.catalog.db import CONNECT_TIMEOUT
from control_plane.schemas import (
    MigrationRunOut,
    MigrationRunPage,
    MigrationRunSummary,
    MigrationTenantOut,
    StartMigration,
)
from control_plane.services import cursors
from control_plane.services.lookup import parse_tenant_key
from migrations.tree import TenantTree
from provisioning.fanout import RunSpec, create_run

STATES = ("pending", "queued", "succeeded", "failed", "skipped")


def revision_ages(tree: TenantTree) -> dict[str, int]:
    """Each tenant revision with its distance from head (0 = head); the tree is linear."""
    return {revision: age for age, revision in enumerate(tree.revisions())}


class MigrationService:
    def __init__(self, catalog_dsn: str, tenant_tree: TenantTree) -> None:
        self.catalog_dsn = catalog_dsn
        self.tenant_tree = tenant_tree

    async def start(self, actor: str, body: StartMigration) -> MigrationRunOut:
        target = self.tenant_tree.head() if body.target == "head" else body.target
        ages = revision_ages(self.tenant_tree)
        if target not in ages:
            raise errors.UnknownRevision(f"no tenant revision {body.target!r}")
        conn = await asyncpg.connect(self.catalog_dsn, timeout=CONNECT_TIMEOUT)
        try:
            tenant_ids = None if body.tenants is None else await self._resolve(conn, body.tenants)
            await self._refuse_downgrade(conn, tenant_ids, target, ages)
            run_id = await create_run(conn, RunSpec(target=target, tenant_ids=tenant_ids, canary=body.canary,
                                                    wave_size=body.wave_size, halt_on_error=body.halt_on_error))
            await conn.execute(
                "INSERT INTO audit_log (actor, action, target_type, target_id, details) "
                "VALUES ($1, 'migration.start', 'migration_run', $2, $3::jsonb)",
                actor, str(run_id), f'{{"target": "{target}"}}')
            return await self._get(conn, run_id)
        finally:
            await conn.close()

    @staticmethod
    async def _refuse_downgrade(conn: asyncpg.Connection, tenant_ids: list[uuid.UUID] | None, target: str,
                                ages: dict[str, int]) -> None:
        """A run to a revision older than a tenant's would skip it and report success; refuse it instead."""
        rows = await conn.fetch(
            "SELECT p.tenant_revision, count(*) AS n FROM placements p JOIN tenants t ON t.id = p.tenant_id "
            "WHERE t.status <> 'deleted' AND p.tenant_revision IS NOT NULL "
            "AND ($1::uuid[] IS NULL OR p.tenant_id = ANY($1::uuid[])) GROUP BY p.tenant_revision",
            tenant_ids)
        newer = {r["tenant_revision"]: r["n"] for r in rows
                 if r["tenant_revision"] in ages and ages[r["tenant_revision"]] < ages[target]}
        if newer:
            revision, _ = max(newer.items(), key=lambda kv: kv[1])
            raise errors.DowngradeNotSupported(
                f"{sum(newer.values())} tenant(s) are at a revision newer than {target} (e.g. {revision}); "
                "migrations only go up", current=revision, target=target)

    @staticmethod
    async def _resolve(conn: asyncpg.Connection, keys: list[str]) -> list[uuid.UUID]:
        parsed = [parse_tenant_key(key) for key in keys]
        ids = [p for p in parsed if isinstance(p, uuid.UUID)]
        slugs = [p for p in parsed if isinstance(p, str)]
        rows = await conn.fetch(
            "SELECT id, slug FROM tenants WHERE (id = ANY($1::uuid[]) OR slug = ANY($2::text[])) "
            "AND status <> 'deleted'", ids, slugs)
        found = {r["id"] for r in rows} | {r["slug"] for r in rows}
        unknown = [k for k, p in zip(keys, parsed, strict=True) if p is None or p not in found]
        if unknown:
            raise errors.TenantNotFound(f"{len(unknown)} tenant(s) not found, e.g. {unknown[0][:100]!r}")
        return [r["id"] for r in rows]

    async def list(self, *, state: str | None, limit: int, cursor: str | None) -> MigrationRunPage:
        """Fleet migration runs newest first, each with its per-state tenant counts."""
        at, after = cursors.decode_uuid(cursor) if cursor else (None, None)
        conn = await asyncpg.connect(self.catalog_dsn, timeout=CONNECT_TIMEOUT)
        try:
            runs = await conn.fetch(
                "SELECT r.*, coalesce((SELECT json_object_agg(c.state, c.n)::text FROM (SELECT state, count(*) AS n "
                "  FROM migration_run_tenants WHERE run_id = r.id GROUP BY state) c), '{}') AS counts "
                "FROM migration_runs r WHERE ($1::text IS NULL OR r.state = $1) "
                "AND ($2::timestamptz IS NULL OR (r.created_at, r.id) < ($2, $3::uuid)) "
                "ORDER BY r.created_at DESC, r.id DESC LIMIT $4", state, at, after, limit + 1)
        finally:
            await conn.close()
        items = [MigrationRunSummary(
            id=r["id"], target_revision=r["target_revision"], state=r["state"], current_wave=r["current_wave"],
            error=r["error"], counts={**dict.fromkeys(STATES, 0), **msgspec.json.decode(r["counts"])},
            created_at=r["created_at"], finished_at=r["finished_at"]) for r in runs[:limit]]
        more = len(runs) > limit
        return MigrationRunPage(items=items,
                                next_cursor=cursors.encode(items[-1].created_at, items[-1].id) if more else None)

    async def get(self, key: str) -> MigrationRunOut:
        try:
            run_id = uuid.UUID(key)
        except ValueError:
            raise errors.MigrationRunNotFound(f"no migration run {key[:100]!r}") from None
        conn = await asyncpg.connect(self.catalog_dsn, timeout=CONNECT_TIMEOUT)
        try:
            return await self._get(conn, run_id)
        finally:
            await conn.close()

    @staticmethod
    async def _get(conn: asyncpg.Connection, run_id: uuid.UUID) -> MigrationRunOut:
        run = await conn.fetchrow("SELECT * FROM migration_runs WHERE id = $1", run_id)
        if run is None:
            raise errors.MigrationRunNotFound(f"no migration run {run_id}")
        rows = await conn.fetch(
            "SELECT rt.*, t.slug FROM migration_run_tenants rt JOIN tenants t ON t.id = rt.tenant_id "
            "WHERE rt.run_id = $1 ORDER BY rt.wave, t.slug", run_id)
        counts = {state: 0 for state in STATES}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return MigrationRunOut(
            id=run["id"], target_revision=run["target_revision"], state=run["state"],
            current_wave=run["current_wave"], canary_size=run["canary_size"], wave_size=run["wave_size"],
            halt_on_error=run["halt_on_error"], error=run["error"], counts=counts, created_at=run["created_at"],
            finished_at=run["finished_at"],
            tenants=[MigrationTenantOut(tenant_id=r["tenant_id"], slug=r["slug"], wave=r["wave"], state=r["state"],
                                        from_revision=r["from_revision"], to_revision=r["to_revision"],
                                        error=r["error"]) for r in rows],
        )
