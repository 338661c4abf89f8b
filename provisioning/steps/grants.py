"""The privilege and database shapes the tiers share: row access in a schema, a database only its
login role may reach, and turns taken on shared objects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from contracts import locks
from contracts.identifiers import quote
from provisioning import probes
from provisioning.steps.roles import ensure_role


def row_access(schema: str, role: str, admin: str) -> str:
    """`role` may read and write rows in `schema` (now and in tables the admin adds later), never
    change the schema or touch Alembic's bookkeeping. Sequences: USAGE (nextval for serial
    columns; identity columns need none), not SELECT, so a shared table's sequence cannot be read
    for how many rows all its tenants wrote (a nextval still advances it: see the README)."""
    s, r, a = quote(schema), quote(role), quote(admin)
    return f"""
        GRANT USAGE ON SCHEMA {s} TO {r};
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r};
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r};
        REVOKE SELECT ON ALL SEQUENCES IN SCHEMA {s} FROM {r};
        REVOKE ALL ON TABLE {s}.alembic_version FROM {r};
        ALTER DEFAULT PRIVILEGES FOR ROLE {a} IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r};
        ALTER DEFAULT PRIVILEGES FOR ROLE {a} IN SCHEMA {s} REVOKE SELECT ON SEQUENCES FROM {r};
        ALTER DEFAULT PRIVILEGES FOR ROLE {a} IN SCHEMA {s} GRANT USAGE ON SEQUENCES TO {r};
    """


_GRANTS_LOCK = locks.GRANTS


@contextlib.asynccontextmanager
async def taking_turns(conn: asyncpg.Connection, what: str) -> AsyncIterator[None]:
    """Creates of many tenants grant on the same shared objects (a shared database, its tables):
    PostgreSQL refuses two concurrent GRANTs on one object ("tuple concurrently updated"), so they
    take turns on a session advisory lock of `conn`'s database, named by `what`."""
    await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _GRANTS_LOCK, what)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _GRANTS_LOCK, what)


async def ensure_database_for(conn: asyncpg.Connection, database: str, login_role: str, secret_key: str) -> None:
    """A database only `login_role` (and the admin) may connect to; the role logs in with its
    derived password. Safe to run concurrently and again."""
    async with taking_turns(conn, database):
        if not await probes.database_exists(conn, database):
            try:
                await conn.execute(f"CREATE DATABASE {quote(database)}")
            except asyncpg.DuplicateDatabaseError:
                pass
        await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(database)} FROM PUBLIC")
        await ensure_role(conn, login_role, secret_key)
        await conn.execute(f"GRANT CONNECT ON DATABASE {quote(database)} TO {quote(login_role)}")
