"""Upgrading one dedicated tenant database: a rendered script on one connection, or Alembic online.

The revision range is rendered once per process (`runner.render_upgrade`, what `alembic upgrade
--sql from:to` prints) and applied in one transaction that locks the tenant, checks that
`alembic_version` says `from`, runs the script and checks that it says `to` before committing: a
crash or an error mid-script leaves the tenant at `from`, and a tenant at another revision never
gets the script. What cannot be rendered (no `alembic_version` yet, not an upgrade, a revision
that needs a live connection) runs Alembic online, one migration at a time per process.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from contracts.identifiers import quote_literal
from migrations import runner
from migrations.tree import TenantTree
from provisioning import probes
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, admin_connection

log = logging.getLogger("tenantplane.upgrades")


class UnexpectedRevision(RuntimeError):
    """The rendered script did not leave `alembic_version` at its target (rolled back)."""


_NOT_EXPECTED = "tp_not_expected"  # the tenant is not at the revision the one-query apply expected
_NOT_REACHED = "tp_not_reached"  # the script did not leave alembic_version at its target


def _version_check(revision: str, marker: str) -> str:
    """A statement that fails unless alembic_version holds `revision` and nothing else. Plain SQL
    (a DO block would cost each fresh backend most of a millisecond loading PL/pgSQL): the failure
    is a text naming `marker` cast to an integer, an error (22P02) whose message carries it."""
    return (f"SELECT CASE WHEN count(*) = 1 AND bool_and(version_num = {quote_literal(revision)}) THEN 0 "
            f"ELSE ('{marker} ' || coalesce(string_agg(version_num, ','), 'none'))::int END "
            "FROM public.alembic_version;")


def _failed_check(exc: asyncpg.PostgresError, marker: str) -> bool:
    return exc.sqlstate == "22P02" and marker in str(exc)


async def apply_expected(conn: asyncpg.Connection, tree: TenantTree, expected: str, target: str,
                         tier: str = "dedicated") -> str | None:
    """`expected` -> `target` in one query, for a caller that knows the revision the tenant should
    be at (a fleet migration: the catalog's, when the wave was queued): BEGIN, the lock, the check
    of `expected` (its row locked), the script, the check of `target`, COMMIT; one round trip
    instead of six. None, with nothing changed, when the range cannot be rendered or the tenant is
    not at `expected`."""
    script = await runner.render_upgrade(tree, expected, target, tier=tier)
    if script is None:
        return None
    try:
        await conn.execute(
            f"BEGIN; SELECT pg_advisory_xact_lock({runner.TENANT_MIGRATION_LOCK}, hashtext(''));\n"
            "SELECT 1 FROM public.alembic_version FOR UPDATE;\n"
            f"{_version_check(expected, _NOT_EXPECTED)}\n{script}\n{_version_check(target, _NOT_REACHED)}\nCOMMIT;")
    except asyncpg.PostgresError as exc:
        await conn.execute("ROLLBACK")  # the statements after the failing one were not run
        if _failed_check(exc, _NOT_REACHED):
            raise UnexpectedRevision(f"the {expected} -> {target} script did not reach {target}") from exc
        if _failed_check(exc, _NOT_EXPECTED) or exc.sqlstate == "42P01":  # elsewhere, or no alembic_version
            return None
        raise
    return target


async def _locked_revision(conn: asyncpg.Connection) -> tuple[bool, str | None]:
    """(exists, revision) of the database's `alembic_version`, its row locked until the end of the
    transaction; revision None when there is no single row."""
    if not await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return False, None
    rows = await conn.fetch("SELECT version_num FROM public.alembic_version FOR UPDATE")
    return True, rows[0]["version_num"] if len(rows) == 1 else None


async def apply_rendered(conn: asyncpg.Connection, tree: TenantTree, target: str, tier: str = "dedicated") -> str | None:
    """Bring the database behind `conn` to `target` with a rendered script if it can be done that
    way; returns the revision it is at afterwards, or None when the online path has to run (nothing
    was changed then)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext(''))", runner.TENANT_MIGRATION_LOCK)
        exists, current = await _locked_revision(conn)
        if current == target:
            return current
        if not exists or current is None:
            return None
        script = await runner.render_upgrade(tree, current, target, tier=tier)
        if script is None:
            return None
        await conn.execute(script)
        after = await conn.fetchval("SELECT version_num FROM public.alembic_version")
        if after != target:  # raising rolls the whole script back
            raise UnexpectedRevision(f"the {current} -> {target} script left alembic_version at {after}")
    return target


async def render_newest_ahead(tree: TenantTree) -> None:
    """Render the newest revision's own step (from the one before it), the range a fleet migration
    after a release most likely applies, so that a worker's first tenant of that migration does not
    wait for Alembic to load its scripts and render (about 0.1 s per process). Best effort."""
    from alembic.script import ScriptDirectory

    def newest_step() -> tuple[str, str] | None:
        head = ScriptDirectory.from_config(tree.config()).get_revision(tree.head())
        return (head.down_revision, head.revision) if isinstance(head.down_revision, str) else None

    try:
        step = await asyncio.to_thread(newest_step)
        if step is not None:
            await runner.render_upgrade(tree, *step, tier="dedicated")
    except Exception as exc:  # the first migration renders it then
        log.info("could not render the newest tenant revision ahead: %s", type(exc).__name__)


async def upgrade_tenant_database(server: ServerInfo, box: SecretBox, tree: TenantTree, database: str,
                                  target: str, expected: str | None = None) -> str | None:
    """One dedicated tenant database to `target` (`expected`: the revision it should be at now, if
    known); returns its revision afterwards. One connection when the rendered script applies (or
    nothing is to do); Alembic online otherwise."""
    async with admin_connection(server, box, database) as conn:
        revision = None
        if expected is not None and expected != target:
            revision = await apply_expected(conn, tree, expected, target)
        if revision is None:
            revision = await apply_rendered(conn, tree, target)
    if revision is not None:
        return revision
    await runner.upgrade(tree, server.dsn(box, database), target)
    return await probes.revision(server, box, database)
