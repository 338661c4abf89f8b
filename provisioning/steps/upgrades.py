"""Upgrading one dedicated tenant database: a rendered script on one connection, or Alembic online.

The fast path (used by fleet migrations, one tenant after another): the revision range is rendered
once per process with Alembic's offline mode (`runner.render_upgrade`, as `alembic upgrade --sql
from:to` does), and applied to each tenant on one connection, in one transaction that first takes
the tenant migration lock and locks the `alembic_version` row, and applies the script only if that
row says `from`. The script ends by moving `alembic_version` from `from` to `to`; the transaction
checks it did before committing. So a crash (or an error) mid-apply leaves the tenant at `from`,
untouched, and a tenant at any other revision is never given this script.

The online path (Alembic's own `upgrade`, a fresh environment and engine, one migration at a time
per process) runs whatever cannot be rendered: a database without `alembic_version` yet, a range
that is not an upgrade, or a revision that needs a live connection (see `render_upgrade_sync`).
"""

from __future__ import annotations

import asyncpg

from migrations import runner
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, admin_connection
from provisioning.steps import probes


class UnexpectedRevision(RuntimeError):
    """The rendered script did not leave `alembic_version` at its target (rolled back)."""


async def _locked_revision(conn: asyncpg.Connection) -> tuple[bool, str | None]:
    """(exists, revision) of the database's `alembic_version`, its row locked until the end of the
    transaction; revision None when there is no single row."""
    if not await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return False, None
    rows = await conn.fetch("SELECT version_num FROM public.alembic_version FOR UPDATE")
    return True, rows[0]["version_num"] if len(rows) == 1 else None


async def apply_rendered(conn: asyncpg.Connection, target: str, tier: str = "dedicated") -> str | None:
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
        script = await runner.render_upgrade("tenant", current, target, tier=tier)
        if script is None:
            return None
        await conn.execute(script)
        after = await conn.fetchval("SELECT version_num FROM public.alembic_version")
        if after != target:  # raising rolls the whole script back
            raise UnexpectedRevision(f"the {current} -> {target} script left alembic_version at {after}")
    return target


async def upgrade_tenant_database(server: ServerInfo, box: SecretBox, database: str, target: str) -> str | None:
    """One dedicated tenant database to `target`; returns its revision afterwards. One connection
    when the rendered script applies (or nothing is to do); Alembic online otherwise."""
    async with admin_connection(server, box, database) as conn:
        revision = await apply_rendered(conn, target)
    if revision is not None:
        return revision
    await runner.upgrade("tenant", server.dsn(box, database), target)
    return await probes.revision(server, box, database)
