"""The unprivileged login role a pg_dump archive is loaded as (restores in place, clones, drills).

An archive is code: pg_restore runs whatever SQL it holds, and a dump can carry functions, index
expressions and defaults written by the source database's owner, or be edited on its way. Loaded
as the server's admin, an `ALTER ROLE`, `COPY ... TO PROGRAM` or untrusted `CREATE EXTENSION` in it
would act as the admin. So pg_restore logs in as `tp_restore_<operation id>` instead:

- LOGIN with a random password set by each attempt (SCRAM verifier: the password is in no SQL
  text, no log, no record), NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  NOINHERIT, a connection limit and a VALID UNTIL: nothing beyond what `grant_load` gives it,
  CONNECT and CREATE on the one database it loads into and CREATE on that database's `public`.
- Named by the operation, so a rerun after a SIGKILL finds the same role: its sessions are ended
  and its password and validity set again, and `drop_restore_role` finds it to drop.
- After the load its objects are handed to the admin (`REASSIGN OWNED`, the owner every tier's
  hardening expects) or dropped with it (`DROP OWNED`), and the role goes: by the hardening of a
  restore in place, at the end of a drill's or clone's load, and by every failure path and undo.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from urllib.parse import quote as url_quote

import asyncpg

from contracts.identifiers import quote, quote_literal, restore_role
from provisioning import probes, scram
from provisioning.backups import dump as dumps
from provisioning.context import StepContext
from provisioning.servers import ServerInfo, admin_connection
from provisioning.steps.grants import taking_turns

ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT CONNECTION LIMIT 4"
VALID_FOR = dt.timedelta(hours=12)  # a rerun sets it again; a role left by an abandoned run stops logging in


def role_dsn(server: ServerInfo, database: str, role: str, password: str) -> str:
    query = f"?sslmode={server.sslmode}" if server.sslmode else ""
    return (f"postgresql://{url_quote(role, safe='')}:{url_quote(password, safe='')}@{server.host}:{server.port}"
            f"/{url_quote(database, safe='')}{query}")


async def _end_sessions(conn: asyncpg.Connection, role: str) -> None:
    """A killed worker's pg_restore child may still be connected as the role."""
    await _take_privileges(conn, role)
    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 "
                       "AND pid <> pg_backend_pid()", role)


async def _take_privileges(conn: asyncpg.Connection, role: str) -> None:
    """An admin that is no superuser gets the role's privileges: ending its sessions, REASSIGN and
    DROP OWNED need them (CREATEROLE gives only ADMIN OPTION on PostgreSQL 16+). Harmless: the
    role holds less than the admin, and goes in a moment."""
    if not await conn.fetchval("SELECT rolsuper OR pg_has_role(current_user, $1, 'USAGE') FROM pg_roles "
                               "WHERE rolname = current_user", role):
        await conn.execute(f"GRANT {quote(role)} TO CURRENT_USER")


async def ensure_restore_role(ctx: StepContext) -> tuple[str, str]:
    """The operation's restore role, made or (after a crash) found and reset: (name, password)."""
    role, password = restore_role(ctx.operation_id), secrets.token_urlsafe(32)
    until = (dt.datetime.now(dt.UTC) + VALID_FOR).isoformat()
    attributes = f"{ATTRIBUTES} VALID UNTIL {quote_literal(until)} PASSWORD {quote_literal(scram.verifier(password))}"
    conn = await ctx.admin()
    try:
        await conn.execute(f"CREATE ROLE {quote(role)} {attributes}")
    except asyncpg.DuplicateObjectError:
        await _end_sessions(conn, role)
        await conn.execute(f"ALTER ROLE {quote(role)} {attributes}")
    return role, password


async def grant_load(ctx: StepContext, role: str, database: str, *, in_public: bool) -> None:
    """What loading an archive into `database` needs, nothing more: connect, create schemas (a
    schema-tier dump makes its schema) and, `in_public`, create in `public` (a dedicated one's
    tables; not in the schemas database, whose `public` no tenant's archive has any business in)."""
    admin = await ctx.admin()
    async with taking_turns(admin, database):  # creates grant on a shared database (tp_schemas) too
        await admin.execute(f"GRANT CONNECT, CREATE ON DATABASE {quote(database)} TO {quote(role)}")
    if in_public:
        async with admin_connection(await ctx.server(), ctx.box, database) as conn:
            await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {quote(role)}")


async def load_dump(ctx: StepContext, database: str, chunks: AsyncIterator[bytes], *, in_public: bool) -> None:
    """pg_restore of `chunks` into `database`, logged in as the operation's restore role (made and
    granted here). A load that fails takes the role with it (its transaction left nothing)."""
    server = await ctx.server()
    await dumps.check_client(dumps.find_binaries(), server.dsn(ctx.box, database))  # at least the server's major
    role, password = await ensure_restore_role(ctx)
    try:
        await grant_load(ctx, role, database, in_public=in_public)
        await dumps.restore(role_dsn(server, database, role, password), chunks)
    except Exception:
        await drop_restore_role(ctx, database, keep_objects=False)
        raise


async def drop_restore_role(ctx: StepContext, database: str | None, *, keep_objects: bool) -> None:
    """The operation's restore role gone, if there is one: what it made in `database` handed to the
    admin (`keep_objects`) or dropped, its privileges revoked, then the role dropped. Idempotent."""
    server = await ctx.server_or_none()
    if server is None:
        return
    role, admin = restore_role(ctx.operation_id), await ctx.admin(server)
    if not await probes.role_exists(admin, role):
        return
    await _end_sessions(admin, role)  # the admin has the role's privileges from here on
    if database is not None and await probes.database_exists(admin, database):
        async with taking_turns(admin, database), admin_connection(server, ctx.box, database) as conn:
            if keep_objects:
                await conn.execute(f"REASSIGN OWNED BY {quote(role)} TO {quote(server.admin_user)}")
            await conn.execute(f"DROP OWNED BY {quote(role)}")  # also its CONNECT/CREATE on the database
    await admin.execute(f"DROP ROLE IF EXISTS {quote(role)}")


async def schemas_made_besides(conn: asyncpg.Connection, ctx: StepContext, schema: str) -> list[str]:
    """The schemas of `conn`'s database the restore role made other than `schema`: a schema-tier
    archive makes its own schema only, and anything else is refused, not handed to the admin."""
    rows = await conn.fetch("SELECT n.nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                            "WHERE r.rolname = $1 AND n.nspname <> $2 ORDER BY 1", restore_role(ctx.operation_id), schema)
    return [r["nspname"] for r in rows]
