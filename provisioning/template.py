"""The template database every dedicated tenant (and every spare) is copied from, and the revision
mark a copy source carries.

The revision of the template (and of a spare) is recorded as the database's comment
(`COMMENT ON DATABASE ... IS 'tenantplane-revision:t0002'`), which the admin session reads from
the shared catalog (`shobj_description`) without connecting to the database itself. A create
then reads one row instead of taking the exclusive template lock and connecting to the template:
only a template that is behind is upgraded (under the exclusive lock, by `upgrade_template`).
`CREATE DATABASE ... TEMPLATE` does not copy comments, so a tenant's database never carries a mark.
"""

from __future__ import annotations

import asyncpg

from contracts import locks
from contracts.identifiers import TEMPLATE_DATABASE, quote, quote_literal
from migrations import runner
from migrations.tree import TenantTree
from provisioning import probes
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, admin_connection

# Advisory lock (on each server's admin database) that orders template upgrades (exclusive)
# against CREATE DATABASE ... TEMPLATE (shared): a copy needs nobody connected to the template.
TEMPLATE_LOCK = locks.TEMPLATE

_MARK = "tenantplane-revision:"


def newest_revision(tree: TenantTree) -> str:
    """The newest revision of the process's tenant tree (read once per process and tree)."""
    return tree.head()


def mark(revision: str) -> str:
    """The comment that records `revision` on a database."""
    return _MARK + revision


def revision_of(comment: str | None) -> str | None:
    """The revision a database's comment records (None: no mark)."""
    return comment[len(_MARK):] if comment and comment.startswith(_MARK) else None


async def marked_revision(conn: asyncpg.Connection, database: str) -> str | None:
    """The revision recorded on `database` (None: no mark, or no such database)."""
    return revision_of(await conn.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", database))


def mark_sql(database: str, revision: str | None) -> str:
    """The statement that records (or, with None, clears) the revision mark of `database`."""
    text = quote_literal(mark(revision)) if revision else "NULL"
    return f"COMMENT ON DATABASE {quote(database)} IS {text}"


async def copy_template(conn: asyncpg.Connection, database: str) -> str | None:
    """`CREATE DATABASE database TEMPLATE tp_template` under the shared template lock; returns the
    revision the template was marked with while it was copied (None: unmarked, or the database
    existed already and nothing was copied)."""
    await conn.execute("SELECT pg_advisory_lock_shared($1)", TEMPLATE_LOCK)
    try:
        revision = await marked_revision(conn, TEMPLATE_DATABASE)
        await conn.execute(f"CREATE DATABASE {quote(database)} TEMPLATE {quote(TEMPLATE_DATABASE)}")
        return revision
    except asyncpg.DuplicateDatabaseError:
        return None
    finally:
        await conn.execute("SELECT pg_advisory_unlock_shared($1)", TEMPLATE_LOCK)


async def upgrade_template(server: ServerInfo, box: SecretBox, tree: TenantTree, target: str | None = None) -> None:
    """Keep the server's template database at the newest tenant revision (it moves first), and
    mark it with that revision so that creates can tell without connecting to it."""
    head = target or tree.head()
    async with admin_connection(server, box) as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
        try:
            if not await probes.database_exists(conn, TEMPLATE_DATABASE):
                await conn.execute(f"CREATE DATABASE {quote(TEMPLATE_DATABASE)}")
            if await probes.revision(server, box, TEMPLATE_DATABASE) != head:
                await runner.upgrade(tree, server.dsn(box, TEMPLATE_DATABASE), head)
                async with admin_connection(server, box, TEMPLATE_DATABASE) as tconn:
                    # copies inherit this: nobody but the tenant's own role gets into its schema
                    await tconn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            await conn.execute(
                f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(TEMPLATE_DATABASE)} FROM PUBLIC")
            await conn.execute(mark_sql(TEMPLATE_DATABASE, head))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)
