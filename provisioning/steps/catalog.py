"""Steps that change only the catalog. Each checks before it acts, so a rerun is harmless."""

from __future__ import annotations

import asyncpg

from provisioning import identifiers
from provisioning.context import StepContext


class NoCapacity(RuntimeError):
    pass


async def place_tenant(ctx: StepContext) -> None:
    """Choose the server (the one named in the request, else the least loaded with room) and
    record the placement; the names derive from the tenant id."""
    if await ctx.catalog.fetchval("SELECT 1 FROM placements WHERE tenant_id = $1", ctx.tenant_id):
        return
    server_id = ctx.params.get("server_id")
    if server_id is None:
        server_id = await ctx.catalog.fetchval(
            """
            SELECT s.id FROM database_servers s
            LEFT JOIN placements p ON p.server_id = s.id
            WHERE s.status = 'active'
            GROUP BY s.id
            HAVING count(p.tenant_id) < s.capacity_databases
            ORDER BY count(p.tenant_id)::float / s.capacity_databases, s.name
            LIMIT 1
            """
        )
        if server_id is None:
            raise NoCapacity("no active database server has room for another tenant")
    database, role, schema = identifiers.placement_names(ctx.tier, ctx.tenant_id)
    await ctx.catalog.execute(
        """
        INSERT INTO placements (tenant_id, server_id, database_name, role_name, schema_name)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING
        """,
        ctx.tenant_id, server_id, database, role, schema,
    )


async def activate_tenant(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Finish of a create: runs in the transaction that marks the operation succeeded."""
    changed = await conn.fetchval(
        "UPDATE tenants SET status = 'active', updated_at = now() "
        "WHERE id = $1 AND status IN ('provisioning', 'failed') RETURNING 1",
        ctx.tenant_id,
    )
    if changed:
        await conn.execute(
            "UPDATE placements SET version = version + 1, updated_at = now() WHERE tenant_id = $1",
            ctx.tenant_id,
        )


async def mark_tenant_deleted(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Finish of a delete: nothing is left on the server, so nothing is left in the catalog."""
    await conn.execute("DELETE FROM placements WHERE tenant_id = $1", ctx.tenant_id)
    await conn.execute(
        "UPDATE tenants SET status = 'deleted', deleted_at = coalesce(deleted_at, now()), "
        "updated_at = now() WHERE id = $1",
        ctx.tenant_id,
    )


async def mark_tenant_failed(conn: asyncpg.Connection, ctx: StepContext) -> None:
    await conn.execute(
        "UPDATE tenants SET status = 'failed', updated_at = now() WHERE id = $1 AND status <> 'deleted'",
        ctx.tenant_id,
    )


async def keep_status(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Finish (or failure) of a migration: the tenant stays as it was, serving its revision."""
    return None
