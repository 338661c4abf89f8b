"""The shared tier on a server: the tenant's rows, tagged with `tenant_id`, in the server's
`tp_shared` database, where every tenant table has row-level security enabled and forced. The
database is migrated once for all its tenants, with the same revisions as the other tiers."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import asyncpg

from contracts.identifiers import SHARED_APP_ROLE, SHARED_DATABASE, quote, quote_literal
from contracts.placement import Tier
from contracts.tiers import LAYOUTS
from migrations import runner
from provisioning import probes
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import grants, guard
from provisioning.steps.catalog import record_revision
from provisioning.tiers import snapshots
from provisioning.tiers.base import Dump
from provisioning.tiers.tables import TenantTables


async def ensure_shared_database(ctx: StepContext) -> None:
    server = await ctx.server()
    async with admin_connection(server, ctx.box) as conn:
        await grants.ensure_database_for(conn, SHARED_DATABASE, SHARED_APP_ROLE, ctx.secret_key)
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn:
        await guard.install_guard(conn, ctx.secret_key, server.admin_user)


async def migrate_shared_database(ctx: StepContext) -> None:
    """The shared database moves for all its tenants at once; each tenant records what it reached.
    The guard and the policies are checked every time, so that a migration brings a database made
    before them up to date as well."""
    server = await ctx.server()
    target = ctx.target_revision
    if await probes.revision(server, ctx.box, SHARED_DATABASE) != target:
        await runner.upgrade(ctx.tenant_tree, server.dsn(ctx.box, SHARED_DATABASE), target, tier="shared")
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn:
        await guard.install_guard(conn, ctx.secret_key, server.admin_user)
        await guard.protect_shared_tables(conn, await tenant_tables(conn))
    await record_revision(ctx, await probes.revision(server, ctx.box, SHARED_DATABASE))


async def grant_shared_privileges(ctx: StepContext) -> None:
    server = await ctx.server()
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn, grants.taking_turns(conn, "public"):
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC;"
                           + grants.row_access("public", SHARED_APP_ROLE, server.admin_user))
    async with admin_connection(server, ctx.box, SHARED_DATABASE) as conn:
        await guard.protect_shared_tables(conn, await tenant_tables(conn))


async def tenant_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY table_name")
    return [r["table_name"] for r in rows]


async def _bind(conn: asyncpg.Connection, tenant_id: object) -> None:
    # FORCE'd RLS applies to a table owner that is not a superuser: bind the tenant first
    await conn.execute("SELECT set_config('app.tenant_id', $1, false)", str(tenant_id))


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
        await _bind(conn, ctx.tenant_id)
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


class SharedTables(TenantTables):
    """The tenant's rows of every table that has tenant_id."""

    def __init__(self, side: StepContext) -> None:
        super().__init__(side, "public")
        self.row_filter = f" WHERE tenant_id = {quote_literal(self.tenant)}"

    async def bind(self, conn: asyncpg.Connection) -> None:
        await _bind(conn, self.tenant)

    async def tables(self, conn: asyncpg.Connection) -> list[str]:
        return await tenant_tables(conn)

    def read_column(self, column: str) -> str:
        return quote(column)

    async def clear(self, conn: asyncpg.Connection, tables: list[str]) -> None:
        await self.bind(conn)
        for table in tables:
            await conn.execute(f"DELETE FROM {self.qualified(table)}{self.row_filter}")


class SharedTier:
    layout = LAYOUTS[Tier.shared]
    create = (ensure_shared_database, migrate_shared_database, grant_shared_privileges)
    delete = (delete_tenant_rows,)
    migrate = (migrate_shared_database,)

    async def prepare_target(self, target: StepContext, keep_login: bool) -> None:
        for step in self.create:
            await step(target)

    async def drop_copy(self, side: StepContext, keep_role: bool) -> None:
        await delete_tenant_rows(side)

    async def adopt_role(self, target: StepContext) -> None:
        """No tenant role here: nothing is shared with another copy."""

    def tables(self, side: StepContext) -> TenantTables:
        return SharedTables(side)

    def dump(self, side: StepContext) -> AbstractAsyncContextManager[Dump]:
        return snapshots.dump_rows(side)

    restore = snapshots.SharedRestore(harden=grant_shared_privileges)


SHARED = SharedTier()
