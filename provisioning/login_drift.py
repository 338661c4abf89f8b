"""Login roles that drifted from what the provisioner set: a password that is not the derived one,
or settings of the role's own (ALTER ROLE ... SET).

Why a check and not a privilege: PostgreSQL lets every role change its own password and its own
settings (ALTER ROLE current_user PASSWORD / SET ...), and nothing can revoke that. On the schema
and shared tiers one login role serves every tenant of the database, so SQL injected into one
tenant's application could lock all of them out (a new password) or slow them down (a setting);
so the role is watched instead: the reconciler, and every LOGIN_CHECK_INTERVAL_SECONDS a worker
for the two shared login roles, finds the drift and puts the role back (its derived password, no
settings of its own), which bounds such a lockout to that interval."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging

import asyncpg

from contracts import identifiers
from contracts.identifiers import quote, quote_literal
from provisioning import scram
from provisioning.sealing import SecretBox
from provisioning.servers import SERVER_COLUMNS, ServerInfo, admin_connection

log = logging.getLogger("tenantplane.worker")

# the login roles every tenant of a tier on a server shares: one that alters itself locks them all out
SHARED_LOGINS = [identifiers.SCHEMA_GATEWAY_ROLE, identifiers.SHARED_APP_ROLE]


def matches(verifier: str | None, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (pg_authid.rolpassword) was made from `password`."""
    try:
        method, rest = (verifier or "").split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored = keys.split(":", 1)[0]
        if method != "SCRAM-SHA-256":
            return False
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored))


async def drifted_logins(conn: asyncpg.Connection, box: SecretBox, roles: list[str]) -> list[tuple[str, str]]:
    """(role, what drifted) for those of `roles` that exist. Passwords are only checked where the
    admin may read pg_authid (a superuser); settings always."""
    found: list[tuple[str, str]] = []
    for r in await conn.fetch(
            "SELECT r.rolname, string_agg(array_to_string(s.setconfig, ', '), '; ') AS settings "
            "FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE r.rolname = ANY($1::text[]) GROUP BY r.rolname ORDER BY r.rolname", roles):
        found.append((r["rolname"], f"settings of its own: {r['settings']}"))
    try:
        rows = await conn.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin "
                                "AND rolname = ANY($1::text[]) ORDER BY rolname", roles)
    except asyncpg.InsufficientPrivilegeError:
        return found
    for r in rows:
        if not matches(r["rolpassword"], box.role_password(r["rolname"])):
            found.append((r["rolname"], "its password is not the derived one (the router cannot log in)"))
    return found


async def put_back(conn: asyncpg.Connection, box: SecretBox, role: str) -> None:
    """The role as the provisioner made it: no settings of its own (also per database), and its
    derived password (the router's)."""
    for database in await conn.fetch(
            "SELECT d.datname FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
            "JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = $1", role):
        await conn.execute(f"ALTER ROLE {quote(role)} IN DATABASE {quote(database['datname'])} RESET ALL")
    await conn.execute(f"ALTER ROLE {quote(role)} RESET ALL")
    await conn.execute(f"ALTER ROLE {quote(role)} PASSWORD {quote_literal(scram.verifier(box.role_password(role)))}")


async def repair_drifted_logins(conn: asyncpg.Connection, box: SecretBox,
                                roles: list[str]) -> list[tuple[str, str]]:
    """drifted_logins(), each drifted role put back; (role, what had drifted)."""
    found = await drifted_logins(conn, box, roles)
    for role in sorted({role for role, _ in found}):
        await put_back(conn, box, role)
    return found


async def watch_shared_logins(catalog: asyncpg.Pool, box: SecretBox, timeout: float = 10.0) -> list[tuple[str, str, str]]:
    """The shared login roles of every registered server checked and, where drifted, put back:
    (server, role, what had drifted). A server that does not answer within `timeout` is skipped
    (the next round tries again; the reconciler lists it unreachable)."""
    servers = [ServerInfo(**dict(r)) for r in await catalog.fetch(
        f"SELECT {SERVER_COLUMNS} FROM database_servers ORDER BY name")]
    repaired: list[tuple[str, str, str]] = []
    for server in servers:
        try:
            async with asyncio.timeout(timeout), admin_connection(server, box) as conn:
                for role, detail in await repair_drifted_logins(conn, box, SHARED_LOGINS):
                    log.warning("login role %s on %s had drifted (%s): put back", role, server.name, detail.split(":")[0])
                    repaired.append((server.name, role, detail))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError):
            continue
    return repaired
