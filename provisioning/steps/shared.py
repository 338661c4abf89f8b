"""Steps for the shared tier: the tenant's rows live, tagged with `tenant_id`, in the server's
`tp_shared` database, where every tenant table has row-level security enabled and forced. Routers
log in as `tp_shared_app`, which owns no table and cannot bypass RLS, and bind each transaction
with set_config('app.tenant_id', ..., true). The shared database is migrated once for all its
tenants, with the same tenant revisions as the other tiers."""

from __future__ import annotations

import asyncpg

from contracts.identifiers import SHARED_APP_ROLE, SHARED_DATABASE, quote
from migrations import runner
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import grants, probes
from provisioning.steps.dedicated import record_revision


async def ensure_shared_database(ctx: StepContext) -> None:
    async with admin_connection(await ctx.server(), ctx.box) as conn:
        await grants.ensure_database_for(conn, SHARED_DATABASE, SHARED_APP_ROLE, ctx.secret_key)


async def migrate_shared_database(ctx: StepContext) -> None:
    """The shared database moves for all its tenants at once; each tenant records what it reached."""
    server = await ctx.server()
    target = ctx.target_revision
    if await probes.revision(server, ctx.box, SHARED_DATABASE) != target:
        await runner.upgrade("tenant", server.dsn(ctx.box, SHARED_DATABASE), target, tier="shared")
    await record_revision(ctx, await probes.revision(server, ctx.box, SHARED_DATABASE))


async def grant_shared_privileges(ctx: StepContext) -> None:
    server = await ctx.server()
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn, grants.taking_turns(conn, "public"):
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC;"
                           + grants.row_access("public", SHARED_APP_ROLE, server.admin_user))


async def tenant_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY table_name")
    return [r["table_name"] for r in rows]


async def delete_tenant_rows(ctx: StepContext) -> None:
    """Every row of the tenant, table by table; children before parents (retried in passes, since
    foreign keys decide the order)."""
    server = await ctx.server_or_none()
    if server is None:
        return
    async with admin_connection(server, ctx.box) as conn:
        if not await probes.database_exists(conn, SHARED_DATABASE):
            return
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn:
        # FORCE'd RLS applies to a table owner that is not a superuser: bind the tenant first
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", str(ctx.tenant_id))
        remaining = await tenant_tables(conn)
        for _ in range(len(remaining) + 1):
            blocked = []
            for table in remaining:
                try:
                    await conn.execute(f"DELETE FROM public.{quote(table)} WHERE tenant_id = $1", ctx.tenant_id)
                except asyncpg.ForeignKeyViolationError:
                    blocked.append(table)
            if not blocked:
                return
            remaining = blocked
        raise RuntimeError(f"rows of tables {remaining} could not be deleted (foreign keys)")
