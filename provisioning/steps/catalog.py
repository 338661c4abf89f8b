"""Steps that change only the catalog. Each checks before it acts, so a rerun is harmless."""

from __future__ import annotations

import uuid
from typing import NamedTuple

import asyncpg

from contracts.tiers import layout_of
from provisioning.context import StepContext
from provisioning.servers import SERVER_COLUMNS, ServerInfo


class NoCapacity(RuntimeError):
    pass


# The tenant's placement: the one it has, else a new one on the server named in the request ($2),
# else on the least loaded active server with room; answered with that server's row (none: no
# server has room). One statement, so a rerun after a crash finds the placement it made.
_PLACE = f"""
WITH existing AS (SELECT server_id FROM placements WHERE tenant_id = $1),
chosen AS (
    SELECT coalesce($2::uuid, (
        SELECT s.id FROM database_servers s
        LEFT JOIN placements p ON p.server_id = s.id
        WHERE s.status = 'active'
        GROUP BY s.id
        HAVING count(p.tenant_id) < s.capacity_databases
        ORDER BY count(p.tenant_id)::float / s.capacity_databases, s.name
        LIMIT 1)) AS id
    WHERE NOT EXISTS (SELECT 1 FROM existing)),
placed AS (
    INSERT INTO placements (tenant_id, server_id, database_name, role_name, schema_name)
    SELECT $1, id, $3, $4, $5 FROM chosen WHERE id IS NOT NULL
    ON CONFLICT (tenant_id) DO NOTHING RETURNING server_id)
SELECT {SERVER_COLUMNS} FROM database_servers
WHERE id = coalesce((SELECT server_id FROM existing), (SELECT server_id FROM placed))
"""


async def place_tenant(ctx: StepContext) -> None:
    """Choose the server (the one named in the request, else the least loaded with room) and
    record the placement; the names derive from the tenant id."""
    server_id = ctx.params.get("server_id")
    database, role, schema = layout_of(ctx.tier).names(ctx.tenant_id)
    row = await ctx.catalog.fetchrow(_PLACE, ctx.tenant_id, uuid.UUID(server_id) if server_id else None,
                                     database, role, schema)
    if row is None:
        raise NoCapacity("no active database server has room for another tenant")
    ctx.placed_on(ServerInfo(**dict(row)))


async def record_revision(ctx: StepContext, revision: str | None) -> None:
    """The revision the tenant's database or schema reached, as the catalog records it."""
    await ctx.catalog.execute(
        "UPDATE placements SET tenant_revision = $2, updated_at = now() WHERE tenant_id = $1",
        ctx.tenant_id, revision,
    )


class CatalogChange(NamedTuple):
    """The catalog change that finishes a pipeline, as clauses of the `WITH` that also marks the
    operation succeeded (queue.finished_statement): one statement, so a tenant is never `active`
    while its operation still looks open. `$3` is the tenant's id."""

    name: str
    clauses: tuple[str, ...] = ()


# Finish of a create: the tenant active, and its placement's version moved on (routers re-read it).
ACTIVATE_TENANT = CatalogChange("activate_tenant", (
    "activated AS (UPDATE tenants SET status = 'active', updated_at = now() "
    "  WHERE id = $3 AND status IN ('provisioning', 'failed') RETURNING id)",
    "placement AS (UPDATE placements SET version = version + 1, updated_at = now() "
    "  WHERE tenant_id IN (SELECT id FROM activated))",
))

# Finish of a delete: nothing is left on the server, so nothing is left in the catalog. Its custom
# domains (and its pending claims on others) are released here, once the tenant is gone for good (a
# failed delete keeps them), so that another tenant can add them; routers hear of it by the
# announcement that follows the finish.
MARK_TENANT_DELETED = CatalogChange("mark_tenant_deleted", (
    "unplaced AS (DELETE FROM placements WHERE tenant_id = $3)",
    "released AS (DELETE FROM tenant_domains WHERE tenant_id = $3)",
    "unclaimed AS (DELETE FROM domain_challenges WHERE tenant_id = $3)",
    "deleted AS (UPDATE tenants SET status = 'deleted', deleted_at = coalesce(deleted_at, now()), "
    "  updated_at = now() WHERE id = $3)",
))

# Finish of a migration or a move (whose steps switched the placement): the tenant stays as it is.
KEEP_STATUS = CatalogChange("keep_status")


async def mark_tenant_failed(conn: asyncpg.Connection, ctx: StepContext) -> None:
    await conn.execute(
        "UPDATE tenants SET status = 'failed', updated_at = now() WHERE id = $1 AND status <> 'deleted'",
        ctx.tenant_id,
    )


async def keep_status(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Finish (or failure) of a migration: the tenant stays as it was, serving its revision."""
    return None
