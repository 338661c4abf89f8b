"""Every API and worker process must run the same tenant tree (TENANT_MIGRATIONS): a worker with
other revisions would build templates, spares and tenants the others cannot migrate, and an API
with other revisions would queue fleet migrations to a head the workers do not know.

So each process, at start, compares its tree with the one recorded in the catalog and records its
own when it may: nothing recorded yet (the first process), or its tree is a later version of the
recorded one (a release: its revisions contain the recorded head, and more). Anything else -- the
recorded head is not among its revisions (an older or unrelated tree), or the same head with
other content -- refuses the start with `TenantTreeMismatch`, naming TENANT_MIGRATIONS. Processes
already running are not stopped: the check is at start, which is when a setting can be wrong.

Why a comment and not a table: the record is one value, written at start, read at start; like a
template's revision mark (template.py) it lives in the catalog's system catalogs, as the comment
of the `migration_runs` table (what fleet migrations run against), so it needs no catalog migration.
"""

from __future__ import annotations

import logging

import asyncpg

from contracts import locks
from contracts.identifiers import quote_literal
from migrations.tree import TenantTree

log = logging.getLogger("tenantplane.tree")

_TABLE = "migration_runs"
_MARK = "tenantplane-tenant-tree:"


class TenantTreeMismatch(RuntimeError):
    """This process's tenant tree is not the one the catalog's other processes run."""


def _record(tree: TenantTree) -> str:
    return f"{_MARK}{tree.head()} {tree.identity()}"


def _parse(comment: str | None) -> tuple[str, str] | None:
    if not comment or not comment.startswith(_MARK):
        return None
    head, _, identity = comment[len(_MARK):].partition(" ")
    return head, identity


async def recorded(conn: asyncpg.Connection) -> tuple[str, str] | None:
    """(head, identity) of the tree recorded in the catalog, or None."""
    return _parse(await conn.fetchval("SELECT obj_description($1::regclass, 'pg_class')", _TABLE))


async def agree_on_tree(conn: asyncpg.Connection, tree: TenantTree, process: str) -> None:
    """Check `tree` against the catalog's record (and record it: see the module's docstring);
    raises TenantTreeMismatch. `process` names the caller in the messages ("worker", "api")."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", locks.TENANT_TREE)
        seen = await recorded(conn)
        mine = (tree.head(), tree.identity())
        if seen == mine:
            return
        if seen is not None:
            head, identity = seen
            if head == mine[0] or head not in tree.revisions():
                raise TenantTreeMismatch(
                    f"TENANT_MIGRATIONS: this {process}'s tenant revisions ({tree.location}: head {mine[0]}, "
                    f"content {mine[1]}) are not those recorded in the catalog by the processes before it "
                    f"(head {head}, content {identity}); every API, worker and tenantctl process must be "
                    "given the same TENANT_MIGRATIONS (a later release of it is fine)")
            log.info("tenant tree recorded as %s (was %s): a later release of it", mine[0], head)
        try:
            async with conn.transaction():
                await conn.execute(f"COMMENT ON TABLE {_TABLE} IS {quote_literal(_record(tree))}")
        except asyncpg.InsufficientPrivilegeError:  # not the catalog's owner: checked, not recorded
            log.warning("the tenant tree could not be recorded: this catalog login does not own %s", _TABLE)
