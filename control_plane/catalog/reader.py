"""The catalog role routers read with: SELECT on the columns routing needs, nothing else.

Why: a router runs inside tenant-facing applications; with the catalog's own login, SQL injected
there (or a leaked environment) could rewrite placements or read sealed server passwords. This
role can read which server and database a tenant is on, its status, plan and features, its custom
domains and its members' roles, and no other column: not the sealed admin passwords, the admin
keys, billing, users or audit. `tenantctl catalog-reader` makes it (idempotent: grants are reset
to exactly these, the password replaced).
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
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}")
        for table, columns in READABLE.items():
            await conn.execute(f"REVOKE ALL ({', '.join(quote(c) for c in columns)}) ON {quote(table)} FROM {name}")
            await conn.execute(f"GRANT SELECT ({', '.join(quote(c) for c in columns)}) ON {quote(table)} TO {name}")
        await conn.execute(f"ALTER ROLE {name} SET default_transaction_read_only = on")
