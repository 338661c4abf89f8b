"""Tenant roles: the tiers that give a tenant a role of its own (dedicated, schema) make and drop
it here, and spares make their roles with the same attributes."""

from __future__ import annotations

import asyncpg

from contracts.credentials import role_password
from contracts.identifiers import quote, quote_literal
from contracts.tiers import layout_of
from provisioning import probes, scram
from provisioning.context import StepContext

# every tenant role (and every spare's role, which becomes one): nothing beyond its own privileges
ROLE_ATTRIBUTES = "NOINHERIT NOCREATEDB NOCREATEROLE NOBYPASSRLS"


def login_clause(role: str, secret_key: str | None) -> str:
    """LOGIN with the role's derived password (`secret_key` given), else NOLOGIN."""
    if secret_key is None:
        return "NOLOGIN"
    return f"LOGIN PASSWORD {quote_literal(scram.verifier(role_password(secret_key, role)))}"


async def ensure_role(conn: asyncpg.Connection, role: str, secret_key: str | None, *,
                      likely_new: bool = False) -> None:
    """A role that logs in with its derived password (`secret_key` given), or one that cannot
    log in at all and is only reached with SET ROLE (schema tier). `likely_new`: try CREATE ROLE
    first (one round trip for a role that does not exist yet, two for one that does)."""
    login = login_clause(role, secret_key)
    if not likely_new and await probes.role_exists(conn, role):
        await conn.execute(f"ALTER ROLE {quote(role)} {login}")
        return
    try:
        await conn.execute(f"CREATE ROLE {quote(role)} {login} {ROLE_ATTRIBUTES}")
    except asyncpg.DuplicateObjectError:
        await conn.execute(f"ALTER ROLE {quote(role)} {login}")


async def create_role(ctx: StepContext) -> None:
    """The tenant's role, logging in where the router logs in as it (NOLOGIN otherwise)."""
    logs_in = layout_of(ctx.tier).logs_in_as_tenant
    await ensure_role(await ctx.admin(), ctx.role, ctx.secret_key if logs_in else None, likely_new=True)


async def drop_role(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is None:
        return
    await (await ctx.admin(server)).execute(f"DROP ROLE IF EXISTS {quote(ctx.role)}")
