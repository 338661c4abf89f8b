"""The verified binding (contracts/guard.py) and the hardening of the databases whose tenants share a
login role (the schemas and shared databases): what a tenant's SQL there must not reach.

- The guard's functions and its key, readable by its NOLOGIN owner only.
- Row policies on every tenant table that check the verified binding: on the shared tier the rows
  of the bound tenant, on the schema tier the whole table only when the bound tenant owns the
  schema (the gateway may SET ROLE to any tenant role, so roles alone do not isolate).
- The monitoring and signalling functions revoked from PUBLIC in the database: with one login
  role for many tenants, PostgreSQL would show every tenant's live query text
  (pg_stat_activity) and let any of them cancel or terminate the others' sessions.
"""

from __future__ import annotations

import logging

import asyncpg

from contracts import guard
from contracts.identifiers import quote
from provisioning.steps.grants import taking_turns

# Every function that shows another session's query text or signals another backend. The views
# over them (pg_stat_activity, pg_stat_replication, ...) fail for PUBLIC then, as they should.
MONITORING_FUNCTIONS = (
    "pg_stat_get_activity(integer)", "pg_stat_get_backend_activity(integer)",
    "pg_terminate_backend(integer, bigint)", "pg_cancel_backend(integer)",
    "pg_log_backend_memory_contexts(integer)",
)
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
            for function in MONITORING_FUNCTIONS:
                await conn.execute(f"REVOKE EXECUTE ON FUNCTION pg_catalog.{function} FROM PUBLIC;"
                                   f"GRANT EXECUTE ON FUNCTION pg_catalog.{function} TO {quote(admin_user)}")
        except asyncpg.InsufficientPrivilegeError:  # only a superuser may change system functions
            log.warning("cannot revoke the monitoring functions from PUBLIC in %s (the admin is no superuser): "
                        "tenants sharing its login role can see each other's query text", conn._params.database)


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
