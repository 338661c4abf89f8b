"""Steps for the dedicated tier: a database and a login role per tenant.

Every step asks the server what exists before it acts, so running a step again after a crash
(before or after its effect) finishes the work instead of failing or duplicating it.
"""

from __future__ import annotations

import asyncpg

from contracts.credentials import role_password
from contracts.identifiers import TEMPLATE_DATABASE, quote, quote_literal
from migrations import runner
from provisioning import scram, spares
from provisioning.context import StepContext
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, admin_connection
from provisioning.steps import grants, probes, upgrades
from provisioning.template import (
    TEMPLATE_LOCK,
    copy_template,
    mark_sql,
    marked_revision,
    newest_revision,
)


async def upgrade_template(server: ServerInfo, box: SecretBox, target: str | None = None) -> None:
    """Keep the server's template database at the newest tenant revision (it moves first), and
    mark it with that revision (template.py) so that creates can tell without connecting to it."""
    head = target or runner.head("tenant")
    async with admin_connection(server, box) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
        try:
            if not await probes.database_exists(conn, TEMPLATE_DATABASE):
                await conn.execute(f"CREATE DATABASE {quote(TEMPLATE_DATABASE)}")
            if await probes.revision(server, box, TEMPLATE_DATABASE) != head:
                await runner.upgrade("tenant", server.dsn(box, TEMPLATE_DATABASE), head)
                async with admin_connection(server, box, TEMPLATE_DATABASE) as tconn:
                    # copies inherit this: nobody but the tenant's own role gets into its schema
                    await tconn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            await conn.execute(
                f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(TEMPLATE_DATABASE)} FROM PUBLIC")
            await conn.execute(mark_sql(TEMPLATE_DATABASE, head))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)


async def ensure_template(ctx: StepContext) -> None:
    """One catalog read when the template is marked at the newest revision; the exclusive lock,
    a connection to the template and possibly an upgrade only when it is not."""
    if await marked_revision(await ctx.admin(), TEMPLATE_DATABASE) != newest_revision():
        await upgrade_template(await ctx.server(), ctx.box)


def login_clause(role: str, secret_key: str | None) -> str:
    """LOGIN with the role's derived password (`secret_key` given), else NOLOGIN."""
    if secret_key is None:
        return "NOLOGIN"
    return f"LOGIN PASSWORD {quote_literal(scram.verifier(role_password(secret_key, role)))}"


async def ensure_role(conn: asyncpg.Connection, role: str, secret_key: str | None, *,
                      likely_new: bool = False) -> None:
    """A role that logs in with its derived password (`secret_key` given), or one that cannot
    log in at all and is only reached with SET ROLE (schema tier). `likely_new`: try CREATE ROLE
    first (one round trip for a role that does not exist yet, two for one that does)."""
    login = login_clause(role, secret_key)
    if not likely_new and await probes.role_exists(conn, role):
        await conn.execute(f"ALTER ROLE {quote(role)} {login}")
        return
    try:
        await conn.execute(f"CREATE ROLE {quote(role)} {login} {grants.ROLE_ATTRIBUTES}")
    except asyncpg.DuplicateObjectError:
        await conn.execute(f"ALTER ROLE {quote(role)} {login}")


async def create_role(ctx: StepContext) -> None:
    await ensure_role(await ctx.admin(), ctx.role, ctx.secret_key if ctx.tier == "dedicated" else None,
                      likely_new=True)


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
    revision = await upgrades.upgrade_tenant_database(await ctx.server(), ctx.box, ctx.database,
                                                      ctx.target_revision, ctx.params.get("from_revision"))
    await record_revision(ctx, revision)


async def record_revision(ctx: StepContext, revision: str | None) -> None:
    await ctx.catalog.execute(
        "UPDATE placements SET tenant_revision = $2, updated_at = now() WHERE tenant_id = $1",
        ctx.tenant_id, revision,
    )


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


async def drop_role(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    await (await ctx.admin(server)).execute(f"DROP ROLE IF EXISTS {quote(ctx.role)}")


