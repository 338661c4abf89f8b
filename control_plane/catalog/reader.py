"""The catalog role routers read with: SELECT on the columns routing needs, nothing else.

Why: a router runs inside tenant-facing applications; with the catalog's own login, SQL injected
there (or a leaked environment) could rewrite placements or read sealed server passwords. This
role can read which server and database a tenant is on, its status, plan and features, its custom
domains and its members' roles, and no other column: not the sealed admin passwords, the admin
keys, billing, users or audit. `tenantctl catalog-reader` makes it (idempotent: grants are reset
to exactly these, the password replaced).

Column grants name the columns that exist when they are made, so a catalog migration that adds a
column routing reads would leave the reader unable to read it. The catalog's env.py therefore runs
the same table grants again after every upgrade or downgrade (`regrant_sql`), for every reader of the
database: a role holding a column-level grant on `tenants` (only this module makes those). Columns
READABLE names that the database does not have (yet, or any more) are left out.
"""

from __future__ import annotations

import asyncpg

from contracts.identifiers import quote, quote_literal

DEFAULT_ROLE = "tp_catalog_reader"

# table -> the columns tenant_router/placement_source.py and memberships.py read
READABLE: dict[str, tuple[str, ...]] = {
    "tenants": ("id", "slug", "status", "tier", "plan", "billing_status", "billing_grace_until"),
    "placements": ("tenant_id", "server_id", "database_name", "role_name", "schema_name", "version",
                   "tenant_revision"),
    "database_servers": ("id", "host", "port", "capacity_connections", "sslmode"),
    "plans": ("name", "features", "rate_limit_per_minute"),
    "tenant_feature_overrides": ("tenant_id", "feature", "enabled"),
    "tenant_domains": ("tenant_id", "domain"),
    "memberships": ("tenant_id", "user_id", "role"),
}


# the columns of READABLE's tables that exist now, as (table, column) rows
EXISTING_COLUMNS_SQL = (
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
    "AND table_name IN (" + ", ".join(quote_literal(t) for t in READABLE) + ")")

# the readers this module made in the current database: roles with a column-level grant on tenants
READERS_SQL = (
    "SELECT DISTINCT r.rolname FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) acl "
    "JOIN pg_roles r ON r.oid = acl.grantee "
    "WHERE a.attrelid = to_regclass('public.tenants') AND a.attacl IS NOT NULL ORDER BY 1")


def table_grant_sql(role: str, existing: set[tuple[str, str]]) -> list[str]:
    """The statements that leave `role` with SELECT on READABLE's columns among `existing`
    (table, column) and nothing else on the catalog's tables (what the tables' owner may grant:
    the login that runs catalog migrations)."""
    name = quote(role)
    statements = [f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}",
                  f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}"]
    for table, columns in READABLE.items():
        present = ", ".join(quote(c) for c in columns if (table, c) in existing)
        if present:  # REVOKE ALL ON ALL TABLES leaves column grants: those are revoked by name
            statements.append(f"REVOKE ALL ({present}) ON {quote(table)} FROM {name}")
            statements.append(f"GRANT SELECT ({present}) ON {quote(table)} TO {name}")
    return statements


def regrant_sql(readers: list[str], existing: set[tuple[str, str]]) -> list[str]:
    """The table grants again for every reader (READERS_SQL's rows), after a catalog migration."""
    return [statement for role in readers for statement in table_grant_sql(role, existing)]


async def ensure_reader(conn: asyncpg.Connection, role: str, password_verifier: str) -> None:
    """The role, able to log in with the SCRAM `password_verifier` (the password itself never
    reaches the server's log), holding SELECT on READABLE's columns only. One transaction."""
    name = quote(role)
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"ALTER ROLE {name} LOGIN PASSWORD {quote_literal(password_verifier)} "
                               "NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS")
        else:
            await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD {quote_literal(password_verifier)} "
                               "NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS")
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"GRANT CONNECT ON DATABASE {quote(database)} TO {name}")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        existing = {(r["table_name"], r["column_name"]) for r in await conn.fetch(EXISTING_COLUMNS_SQL)}
        for statement in table_grant_sql(role, existing):
            await conn.execute(statement)
        await conn.execute(f"ALTER ROLE {name} SET default_transaction_read_only = on")
