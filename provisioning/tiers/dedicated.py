"""The dedicated tier on a server: a database copied from the template (or a spare renamed) and a
login role per tenant. Every step asks the server what exists before it acts, so running it again
after a crash, before or after its effect, finishes the work."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from contracts.identifiers import TEMPLATE_DATABASE, quote
from contracts.placement import Tier
from contracts.tiers import LAYOUTS
from provisioning import probes, spares
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import grants, upgrades
from provisioning.steps.catalog import record_revision
from provisioning.steps.roles import create_role, drop_role, ensure_role, login_clause
from provisioning.template import copy_template, marked_revision, newest_revision, upgrade_template
from provisioning.tiers import snapshots
from provisioning.tiers.base import Dump
from provisioning.tiers.tables import TenantTables


async def ensure_template(ctx: StepContext) -> None:
    """One catalog read when the template is marked at the newest revision; the exclusive lock,
    a connection to the template and possibly an upgrade only when it is not."""
    if await marked_revision(await ctx.admin(), TEMPLATE_DATABASE) != newest_revision(ctx.tenant_tree):
        await upgrade_template(await ctx.server(), ctx.box, ctx.tenant_tree)


async def create_database(ctx: StepContext) -> None:
    """A spare at the target revision renamed to the tenant's name, its role (granted row access
    in it already) taking the place of the tenant's fresh role (spares.py); else a copy of the
    template. Either way the revision the copy was made at is known to the next steps."""
    db = ctx.database
    conn = await ctx.admin()
    if not await probes.database_exists(conn, db):
        revision = await spares.claim(conn, db, ctx.role, login_clause(ctx.role, ctx.secret_key),
                                      ctx.target_revision)
        ctx.spare_claimed = revision is not None
        ctx.copied_revision = revision or await copy_template(conn, db)
    if not ctx.spare_claimed:  # a spare comes with CONNECT revoked already; a fresh copy does not
        await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(db)} FROM PUBLIC")


async def migrate_copy(ctx: StepContext) -> None:
    """After create_database: a copy it made at the target revision needs only its revision
    recorded; anything else (a restart in between, a copy of a template that was behind) goes
    through migrate_schema, which asks the database."""
    if ctx.copied_revision is not None and ctx.copied_revision == ctx.target_revision:
        await record_revision(ctx, ctx.copied_revision)
    else:
        await migrate_schema(ctx)


async def migrate_schema(ctx: StepContext) -> None:
    """A rendered script on one connection where it applies, Alembic online otherwise (upgrades.py)."""
    revision = await upgrades.upgrade_tenant_database(await ctx.server(), ctx.box, ctx.tenant_tree, ctx.database,
                                                      ctx.target_revision, ctx.params.get("from_revision"))
    await record_revision(ctx, revision)


async def harden_database(ctx: StepContext) -> None:
    """Only the tenant's role may connect; it may read and write rows, not change the schema."""
    server = await ctx.server()
    db, role = quote(ctx.database), quote(ctx.role)
    await (await ctx.admin()).execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC;"
                                      f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}")
    if ctx.spare_claimed:
        return  # the spare's role, now the tenant's, was granted row access when the spare was made
    async with admin_connection(server, ctx.box, ctx.database) as conn:
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC;"
                           + grants.row_access("public", ctx.role, server.admin_user))


async def block_connections(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    conn = await ctx.admin(server)
    if await probes.database_exists(conn, ctx.database):
        await conn.execute(f"ALTER DATABASE {quote(ctx.database)} ALLOW_CONNECTIONS false")
    if await probes.role_exists(conn, ctx.role):
        await conn.execute(f"ALTER ROLE {quote(ctx.role)} NOLOGIN")


async def terminate_connections(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    await (await ctx.admin(server)).execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE (datname = $1 OR usename = $2) AND pid <> pg_backend_pid()",
        ctx.database, ctx.role,
    )


async def drop_database(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    await (await ctx.admin(server)).execute(f"DROP DATABASE IF EXISTS {quote(ctx.database)} WITH (FORCE)")


class DedicatedTier:
    layout = LAYOUTS[Tier.dedicated]
    create = (ensure_template, create_role, create_database, migrate_copy, harden_database)
    delete = (block_connections, terminate_connections, drop_database, drop_role)
    migrate = (migrate_schema,)

    async def prepare_target(self, target: StepContext, keep_login: bool) -> None:
        await ensure_template(target)
        async with admin_connection(await target.server(), target.box) as conn:
            await ensure_role(conn, target.role, target.secret_key)
        await create_database(target)
        await migrate_schema(target)
        await harden_database(target)

    async def drop_copy(self, side: StepContext, keep_role: bool) -> None:
        for step in (block_connections, terminate_connections, drop_database):
            await step(side)
        if keep_role:
            async with admin_connection(await side.server(), side.box) as conn:  # it serves the other copy now
                await conn.execute(f"ALTER ROLE {quote(side.role)} LOGIN")
        else:
            await drop_role(side)

    async def adopt_role(self, target: StepContext) -> None:
        """The role logs in here as it did for the old copy."""

    def tables(self, side: StepContext) -> TenantTables:
        return TenantTables(side, "public")

    def dump(self, side: StepContext) -> AbstractAsyncContextManager[Dump]:
        return snapshots.dump_database(side, side.database, "public", "dedicated")

    restore = snapshots.DedicatedRestore()


DEDICATED = DedicatedTier()
