"""Spare databases: copies of the template made ahead of time, so that a dedicated create renames
one (`ALTER DATABASE ... RENAME`, under a millisecond) instead of waiting for `CREATE DATABASE`.

A spare `tp_spare_<hex>` comes with a NOLOGIN role of the same name, granted row access in it as
`harden_database` grants a tenant's role, and is marked with its revision (template.py) last: a
marked spare is ready, an unmarked one (its worker died) is never claimed and the next refill drops
it. `keep_spares()` runs in every worker and keeps SPARE_DATABASES (default 2, 0: off) on each
active server, within its `capacity_databases`; spares at a revision the template has left behind
are replaced.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from contracts import identifiers, locks
from contracts.identifiers import SPARE_PREFIX, TEMPLATE_DATABASE, quote
from provisioning.sealing import SecretBox
from provisioning.servers import SERVER_COLUMNS, ServerInfo, admin_connection
from provisioning.steps import grants
from provisioning.steps.roles import ROLE_ATTRIBUTES
from provisioning.template import (
    copy_template,
    mark,
    mark_sql,
    marked_revision,
    revision_of,
)

log = logging.getLogger("tenantplane.spares")

# Advisory lock on each server's admin database: one refill at a time per server, whichever
# worker (or catalog) it comes from.
SPARE_LOCK = locks.SPARE_REFILL
SPARE_CHECK_SECONDS = 15.0


async def claim(conn: asyncpg.Connection, database: str, role: str, login: str, revision: str) -> str | None:
    """Make a spare marked `revision` the tenant's `database`, and its role the tenant's `role`
    (logging in with `login`); returns the revision, or None when no spare could be had. Two
    round trips when the first spare tried is had: the candidates, then the claim as one query
    (rename, clear the mark, drop the tenant's fresh role, rename the spare's role to it). Of two
    workers renaming one spare, PostgreSQL lets one succeed; the other tries the next. No spare
    is claimed for a role that has memberships or privileges already (a move's target)."""
    # no candidates when the role has memberships: it is in use already (a move's target), not a
    # fresh create
    rows = await conn.fetch(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) "
        "AND shobj_description(oid, 'pg_database') = $2 AND NOT EXISTS (SELECT 1 FROM pg_auth_members m "
        "  JOIN pg_roles r ON r.oid IN (m.roleid, m.member) WHERE r.rolname = $3) ORDER BY random()",
        SPARE_PREFIX, mark(revision), role)
    for row in rows:
        spare = quote(row["datname"])
        try:
            await conn.execute(  # one transaction, sent as one query
                f"BEGIN; ALTER DATABASE {spare} RENAME TO {quote(database)}; {mark_sql(database, None)}; "
                f"DROP ROLE IF EXISTS {quote(role)}; ALTER ROLE {spare} RENAME TO {quote(role)}; "
                f"ALTER ROLE {quote(role)} {login}; COMMIT")
            return revision
        except asyncpg.PostgresError as exc:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")  # the statements after the failing one were not run
            if isinstance(exc, asyncpg.DependentObjectsStillExistError):
                return None  # the tenant's role holds privileges already: not a fresh create
            if isinstance(exc, (asyncpg.InvalidCatalogNameError, asyncpg.ObjectInUseError,
                                asyncpg.UndefinedObjectError)):
                continue  # claimed (or dropped) by someone else first, or somebody is connected to it
            raise
    return None


async def list_spares(conn: asyncpg.Connection) -> list[tuple[str, str | None]]:
    """(name, marked revision) of every spare on the server, oldest first."""
    return [(r["datname"], revision_of(r["comment"])) for r in await conn.fetch(
        "SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database "
        "WHERE starts_with(datname, $1) ORDER BY oid", SPARE_PREFIX)]


async def make_spare(conn: asyncpg.Connection, server: ServerInfo, box: SecretBox) -> str | None:
    """One new spare, hardened, granted and then marked; None when the template carries no mark."""
    name = identifiers.spare_database(uuid.uuid4())
    await conn.execute(f"CREATE ROLE {quote(name)} NOLOGIN {ROLE_ATTRIBUTES}")
    revision = await copy_template(conn, name)
    if revision is None:
        await _drop(conn, name)
        return None
    await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(name)} FROM PUBLIC")
    async with admin_connection(server, box, name) as spare:
        await spare.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC;"
                            + grants.row_access("public", name, server.admin_user))
    await conn.execute(mark_sql(name, revision))  # last: a marked spare is ready to be claimed
    return name


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    """A spare and its role (the role's privileges live in the database, which goes first)."""
    await conn.execute(f"DROP DATABASE IF EXISTS {quote(name)} WITH (FORCE)")
    await conn.execute(f"DROP ROLE IF EXISTS {quote(name)}")


async def refill(server: ServerInfo, box: SecretBox, wanted: int) -> list[str]:
    """Bring the server to `wanted` spares at its template's revision (dropping stale, unmarked and
    surplus ones); returns the spares it holds afterwards. Does nothing while another refill of the
    same server runs. Spares follow the template: with no marked template (no tenant created yet
    and no fleet migration), none are made."""
    async with admin_connection(server, box) as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", SPARE_LOCK):
            return [name for name, _ in await list_spares(conn)]
        try:
            current = await marked_revision(conn, TEMPLATE_DATABASE)
            spares = await list_spares(conn)
            keep = [name for name, revision in spares if current is not None and revision == current][:wanted]
            roles = {r["rolname"] for r in await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", SPARE_PREFIX)}
            for name in sorted({name for name, _ in spares} | roles):  # a role alone: a worker died making it
                if name not in keep:
                    await _drop(conn, name)
            while current is not None and len(keep) < wanted:
                name = await make_spare(conn, server, box)
                if name is None:
                    break
                keep.append(name)
            return keep
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", SPARE_LOCK)


async def wanted_per_server(catalog: Any, count: int) -> list[tuple[ServerInfo, int]]:
    """Every registered server with the number of spares it should hold: `count`, bounded by the
    room its database capacity leaves; none unless it is `active`."""
    rows = await catalog.fetch(
        f"SELECT {SERVER_COLUMNS}, status, capacity_databases, "
        "(SELECT count(*) FROM placements p WHERE p.server_id = database_servers.id) AS placed "
        "FROM database_servers ORDER BY name")
    out = []
    for row in rows:
        values = dict(row)
        status, capacity, placed = values.pop("status"), values.pop("capacity_databases"), values.pop("placed")
        wanted = max(0, min(count, capacity - placed)) if status == "active" else 0
        out.append((ServerInfo(**values), wanted))
    return out


async def refill_all(catalog: Any, box: SecretBox, count: int) -> dict[str, int]:
    """One pass over every registered server (an unreachable one is skipped: it keeps no spares,
    and the reconciler reports it); the spares each server reached holds afterwards."""
    held: dict[str, int] = {}
    for server, wanted in await wanted_per_server(catalog, count):
        try:
            held[server.name] = len(await asyncio.wait_for(refill(server, box, wanted), 60))
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("spares on %s: %s", server.name, type(exc).__name__)
        except Exception as exc:  # e.g. a password sealed under another key: the other servers go on
            log.warning("spares on %s: %s", server.name, type(exc).__name__)
    return held


async def keep_spares(catalog: Any, box: SecretBox, count: int, wake: asyncio.Event,
                      interval: float = SPARE_CHECK_SECONDS,
                      on_counts: Callable[[dict[str, int]], None] | None = None) -> None:
    """The worker's background task: refill every server now, when woken, and every `interval`."""
    while True:
        try:
            held = await refill_all(catalog, box, count)
            if on_counts is not None:  # the worker's spares gauge
                on_counts(held)
        except Exception as exc:  # the loop outlives a catalog that is briefly away
            log.warning("spares: %s", type(exc).__name__)
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except asyncio.TimeoutError:
            pass
        wake.clear()
