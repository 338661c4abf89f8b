"""The schema tier on a server: a schema per tenant in the server's `tp_schemas` database, owned by
the admin, used through a NOLOGIN tenant role with USAGE on that schema only. Routers log in as
`tp_gateway` (a member of every tenant role, NOINHERIT, so it holds no privilege of its own)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from contracts.identifiers import SCHEMA_GATEWAY_ROLE, SCHEMAS_DATABASE, quote
from contracts.placement import Tier
from contracts.tiers import LAYOUTS
from migrations import runner
from provisioning import probes
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import grants, guard
from provisioning.steps.catalog import record_revision
from provisioning.steps.roles import create_role, drop_role, ensure_role
from provisioning.tiers import snapshots
from provisioning.tiers.base import Dump
from provisioning.tiers.tables import TenantTables


async def ensure_schemas_database(ctx: StepContext) -> None:
    server = await ctx.server()
    async with admin_connection(server, ctx.box) as conn:
        await grants.ensure_database_for(conn, SCHEMAS_DATABASE, SCHEMA_GATEWAY_ROLE, ctx.secret_key)
    async with admin_connection(server, ctx.box, SCHEMAS_DATABASE) as conn:
        async with grants.taking_turns(conn, "public"):
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await guard.install_guard(conn, ctx.secret_key, server.admin_user)


async def create_schema(ctx: StepContext) -> None:
    async with admin_connection(await ctx.server(), ctx.box, SCHEMAS_DATABASE) as conn:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(ctx.schema)}")
        await conn.execute(f"GRANT USAGE ON SCHEMA {quote(ctx.schema)} TO {quote(ctx.role)}")


async def migrate_tenant_schema(ctx: StepContext) -> None:
    """The guard and the schema's policies are checked every time, so that a migration brings a
    schema made before them up to date as well."""
    server = await ctx.server()
    target = ctx.target_revision
    if await probes.revision(server, ctx.box, SCHEMAS_DATABASE, ctx.schema) != target:
        await runner.upgrade(ctx.tenant_tree, server.dsn(ctx.box, SCHEMAS_DATABASE), target, tier="schema",
                             schema=ctx.schema)
    async with admin_connection(server, ctx.box, SCHEMAS_DATABASE) as conn:
        await guard.install_guard(conn, ctx.secret_key, server.admin_user)
        await guard.protect_schema_tables(conn, ctx.schema, str(ctx.tenant_id))
    await record_revision(ctx, await probes.revision(server, ctx.box, SCHEMAS_DATABASE, ctx.schema))


async def grant_schema_privileges(ctx: StepContext) -> None:
    """Rows in its own schema, nothing else, and only in transactions bound to the tenant (the
    policies); then let the gateway SET ROLE to it."""
    server = await ctx.server()
    async with admin_connection(server, ctx.box, SCHEMAS_DATABASE) as conn:
        await conn.execute(grants.row_access(ctx.schema, ctx.role, server.admin_user))
        await guard.protect_schema_tables(conn, ctx.schema, str(ctx.tenant_id))
        await conn.execute(f"GRANT {quote(ctx.role)} TO {quote(SCHEMA_GATEWAY_ROLE)}")


async def revoke_gateway(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    async with admin_connection(server, ctx.box) as conn:
        if await probes.role_exists(conn, ctx.role) and await probes.role_exists(conn, SCHEMA_GATEWAY_ROLE):
            await conn.execute(f"REVOKE {quote(ctx.role)} FROM {quote(SCHEMA_GATEWAY_ROLE)}")


async def drop_tenant_schema(ctx: StepContext) -> None:
    await drop_schema_objects(ctx, role_goes_too=True)


async def drop_schema_objects(ctx: StepContext, role_goes_too: bool) -> None:
    """The schema (its tables, grants and default privileges go with it). When the role is about to
    be dropped as well, DROP OWNED BY clears anything else it holds in this database -- and its
    privileges on databases, which is why a role that lives on (a move to the dedicated tier on
    the same server) must not get it."""
    server = await ctx.server_or_none()
    if server is None:
        return
    async with admin_connection(server, ctx.box) as conn:
        if not await probes.database_exists(conn, SCHEMAS_DATABASE):
            return
    async with admin_connection(server, ctx.box, SCHEMAS_DATABASE) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote(ctx.schema)} CASCADE")
        if role_goes_too and await probes.role_exists(conn, ctx.role):
            await conn.execute(f"DROP OWNED BY {quote(ctx.role)}")


class SchemaTier:
    layout = LAYOUTS[Tier.schema]
    create = (ensure_schemas_database, create_role, create_schema, migrate_tenant_schema, grant_schema_privileges)
    delete = (revoke_gateway, drop_tenant_schema, drop_role)
    migrate = (migrate_tenant_schema,)

    async def prepare_target(self, target: StepContext, keep_login: bool) -> None:
        await ensure_schemas_database(target)
        async with admin_connection(await target.server(), target.box) as conn:
            await ensure_role(conn, target.role, target.secret_key if keep_login else None)
        await create_schema(target)
        await migrate_tenant_schema(target)
        await grant_schema_privileges(target)

    async def drop_copy(self, side: StepContext, keep_role: bool) -> None:
        await revoke_gateway(side)
        await drop_schema_objects(side, role_goes_too=not keep_role)
        if not keep_role:
            await drop_role(side)

    async def adopt_role(self, target: StepContext) -> None:
        """The role logged in for the old copy; here only the gateway reaches it, with SET ROLE."""
        async with admin_connection(await target.server(), target.box) as conn:
            await conn.execute(f"ALTER ROLE {quote(target.role)} NOLOGIN")
            await conn.execute(f"GRANT {quote(target.role)} TO {quote(SCHEMA_GATEWAY_ROLE)}")

    def tables(self, side: StepContext) -> TenantTables:
        return TenantTables(side, side.schema)

    def dump(self, side: StepContext) -> AbstractAsyncContextManager[Dump]:
        return snapshots.dump_database(side, SCHEMAS_DATABASE, side.schema, "schema")

    restore = snapshots.SchemaRestore()


SCHEMA = SchemaTier()
