"""Tenant login-role passwords, derived rather than stored.

A tenant role's password is HMAC-SHA256(secret key, "tenant-role-password:" + role name). The
provisioner sets it when it creates the role and the router derives it again when it connects, so
the password is never written anywhere: not in the catalog, not in logs, not in operation records.
Rotating the secret key means re-setting every role's password (ALTER ROLE) with the new key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def subkey(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the deployment's secret key."""
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()


def role_password_key(secret_key: str) -> bytes:
    """The key role passwords are derived with: what a router holds (contracts/router_key.py)."""
    return subkey(secret_key, "tenant-role-password")


def password_for(role_password_key: bytes, role: str) -> str:
    digest = hmac.new(role_password_key, role.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def role_password(secret_key: str, role: str) -> str:
    return password_for(role_password_key(secret_key), role)
