"""Login roles that drifted from what the provisioner set: a password that is not the derived one,
or settings of the role's own (ALTER ROLE ... SET).

Why a check and not a privilege: PostgreSQL lets every role change its own password and its own
settings (ALTER ROLE current_user PASSWORD / SET ...), and nothing can revoke that. On the schema
and shared tiers one login role serves every tenant of the database, so SQL injected into one
tenant's application could lock all of them out (a new password) or slow them down (a setting);
the reconciler reports it so an operator, or a rerun of the create steps, puts it back."""

from __future__ import annotations

import base64
import hashlib
import hmac

import asyncpg

from provisioning.sealing import SecretBox


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
