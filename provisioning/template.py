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

import functools

import asyncpg

from contracts import locks
from contracts.identifiers import TEMPLATE_DATABASE, quote, quote_literal

# Advisory lock (on each server's admin database) that orders template upgrades (exclusive)
# against CREATE DATABASE ... TEMPLATE (shared): a copy needs nobody connected to the template.
TEMPLATE_LOCK = locks.TEMPLATE

_MARK = "tenantplane-revision:"


@functools.cache
def newest_revision() -> str:
    """The newest tenant revision (Alembic reads its script folder each time: ~1 ms, several
    times per create; the scripts do not change while a process runs)."""
    from migrations import runner

    return runner.head("tenant")


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
