"""The verified binding (contracts/guard.py) and the hardening of the databases whose tenants share a
login role (the schemas and shared databases): what a tenant's SQL there must not reach.

- The guard's functions and its key, readable by its NOLOGIN owner only.
- Row policies on every tenant table that check the verified binding: on the shared tier the rows
  of the bound tenant, on the schema tier the whole table only when the bound tenant owns the
  schema (the gateway may SET ROLE to any tenant role, so roles alone do not isolate).
- The monitoring and signalling functions revoked from PUBLIC in the database: with one login
  role for many tenants, PostgreSQL would show every tenant's live query text
  (pg_stat_activity) and let any of them cancel or terminate the others' sessions.
- The advisory-lock functions revoked too: their keys are database-wide, so one tenant's SQL could
  hold a key another tenant's code (or our workers' turn-taking) waits on.
"""

from __future__ import annotations

import logging

import asyncpg

from contracts import guard
from contracts.identifiers import quote
from provisioning.steps.grants import taking_turns

# What a tenant-facing session must not call where tenants share a login role: functions that show
# other sessions (query text, locks, blocking pids), signal other backends, or count what the
# whole database holds (the pg_stat_* counters behind pg_stat_user_tables, relation and database
# sizes), and pg_prepared_statement() (asyncpg's cached statements of earlier borrowers). The
# views over them (pg_stat_activity, pg_locks, pg_stat_user_tables, pg_prepared_statements, ...)
# then fail for PUBLIC, as they should. All pg_stat_get_* are taken, present and future.
MONITORING_FUNCTIONS = (
    "pg_terminate_backend", "pg_cancel_backend", "pg_log_backend_memory_contexts", "pg_lock_status",
    "pg_blocking_pids", "pg_safe_snapshot_blocking_pids", "pg_prepared_statement", "pg_prepared_xact",
    "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size",
    "pg_tablespace_size", "pg_relation_filenode", "pg_relation_filepath",
)
# Taking an advisory lock, in every form (session or transaction, exclusive or shared, waiting or
# trying, both key shapes). The unlock functions stay open: they only release what the caller
# holds, and the router's connection reset calls pg_advisory_unlock_all().
ADVISORY_LOCK_FUNCTIONS = tuple(
    f"pg_{try_}advisory_{xact}lock{shared}"
    for try_ in ("", "try_") for xact in ("", "xact_") for shared in ("", "_shared"))
_OPEN_TO_PUBLIC = ("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace "
                   "AND (p.proname LIKE 'pg\\_stat\\_get\\_%' OR p.proname = ANY($1::text[])) "
                   "AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1")
log = logging.getLogger("tenantplane.provisioning")
SHARED_POLICY = f"tenant_id = {guard.BOUND_TENANT}"


def schema_policy(tenant_id: str) -> str:
    return f"{guard.BOUND_TENANT} = '{tenant_id}'::uuid"


async def install_guard(conn: asyncpg.Connection, secret_key: str, admin_user: str) -> None:
    """The guard in `conn`'s database, with the deployment's key; the monitoring functions out of
    PUBLIC's reach (the admin keeps them). Idempotent; creates take turns on it."""
    ikey, okey = guard.hmac_pads(guard.binding_key(secret_key))
    async with taking_turns(conn, guard.GUARD_SCHEMA):
        await conn.execute(guard.INSTALL_SQL)
        await conn.execute(guard.SET_KEY_SQL, ikey, okey)
        try:
            functions = [r[0] for r in await conn.fetch(_OPEN_TO_PUBLIC, list(MONITORING_FUNCTIONS + ADVISORY_LOCK_FUNCTIONS))]
            if functions:  # only what is still open: creates run this for every new tenant
                await conn.execute(";".join(
                    f"REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC;GRANT EXECUTE ON FUNCTION {f} TO {quote(admin_user)}"
                    for f in functions)
                    + f";GRANT EXECUTE ON FUNCTION pg_catalog.pg_prepared_statement() TO {guard.GUARD_OWNER}")
        except asyncpg.InsufficientPrivilegeError:  # only a superuser may change system functions
            log.warning("cannot revoke the monitoring functions from PUBLIC in %s (the admin is no superuser): "
                        "tenants sharing its login role can see each other's sessions and statistics",
                        conn._params.database)


async def install_guard_functions(conn: asyncpg.Connection) -> None:
    """The guard's role, schema and functions without a key, for a copy only the admin reaches (a
    drill's scratch database): a schema-tier dump's policies call bound_tenant(), so pg_restore
    needs it to exist, and with no key no tenant-facing session could bind there anyway."""
    async with taking_turns(conn, guard.GUARD_SCHEMA):
        await conn.execute(guard.INSTALL_SQL)


async def _protect(conn: asyncpg.Connection, schema: str, tables: list[str], policy: str, force: bool) -> None:
    """Only what is missing is changed: each of these statements locks the table against every
    tenant's traffic for a moment, and creates run this for every new tenant."""
    for table in tables:
        qualified = f"{quote(schema)}.{quote(table)}"
        state = await conn.fetchrow(
            "SELECT c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, "
            "(SELECT pg_get_expr(p.polqual, p.polrelid) FROM pg_policy p WHERE p.polrelid = c.oid "
            " AND p.polname = 'tenant_isolation') AS qual FROM pg_class c WHERE c.oid = $1::regclass", qualified)
        sql = []
        if not state["enabled"]:
            sql.append(f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY")
        if force and not state["forced"]:
            sql.append(f"ALTER TABLE {qualified} FORCE ROW LEVEL SECURITY")
        if state["qual"] is None or "bound_tenant" not in state["qual"]:
            verb = "CREATE" if state["qual"] is None else "ALTER"
            sql.append(f"{verb} POLICY tenant_isolation ON {qualified} USING ({policy}) WITH CHECK ({policy})")
        if sql:
            await conn.execute(";".join(sql))


async def protect_shared_tables(conn: asyncpg.Connection, tables: list[str]) -> None:
    """Every tenant table of the shared database checks the verified binding (tables made before
    the guard existed get their policy re-pointed)."""
    async with taking_turns(conn, "public"):
        await _protect(conn, "public", tables, SHARED_POLICY, force=True)


async def protect_schema_tables(conn: asyncpg.Connection, schema: str, tenant_id: str) -> None:
    """Every table of a tenant's schema answers only transactions bound to that tenant. Not
    FORCE'd: the owner (the admin: migrations, moves, backups) works below it."""
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> "
                            "'alembic_version' ORDER BY tablename", schema)
    await _protect(conn, schema, [r["tablename"] for r in rows], schema_policy(tenant_id), force=False)
