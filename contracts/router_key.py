"""What a router needs of the deployment's secret, and nothing more: the key tenant role passwords
are derived with and the key binding tickets are signed with.

Why: SECRET_KEY also seals the servers' admin passwords in the catalog (provisioning/sealing.py)
and derives every other key; a router is the part that runs inside tenant-facing applications, so
it should hold only what routing takes. `tenantctl router-key` prints the two subkeys as one
string, ROUTER_KEY, for the routers' environment; both are one-way HMACs of SECRET_KEY, so the
router key gives nothing back of it (no server admin password can be unsealed with it).

Format: `tprk1.<role-password key>.<binding key>`, each unpadded url-safe base64 of 32 bytes.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from contracts import credentials, guard

PREFIX = "tprk1"


class RouterKeys(msgspec.Struct, frozen=True):
    role_password_key: bytes  # credentials.password_for(key, role): a tenant login role's password
    binding_key: bytes  # guard.ticket(key, ...): the proof a shared login sends with BEGIN

    @classmethod
    def from_secret_key(cls, secret_key: str) -> "RouterKeys":
        return cls(credentials.role_password_key(secret_key), guard.binding_key(secret_key))

    @classmethod
    def parse(cls, text: str) -> "RouterKeys":
        """A ROUTER_KEY value; ValueError (naming the variable, never showing the value) if malformed."""
        parts = text.strip().split(".")
        try:
            if len(parts) != 3 or parts[0] != PREFIX:
                raise ValueError
            keys = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts[1:]]
        except (ValueError, binascii.Error):
            raise ValueError(f"ROUTER_KEY is not a router key ({PREFIX}.<key>.<key>, from `tenantctl router-key`)") from None
        if any(len(k) != 32 for k in keys):
            raise ValueError("ROUTER_KEY is not a router key (each part holds 32 bytes)")
        return cls(keys[0], keys[1])

    def encode(self) -> str:
        parts = [base64.urlsafe_b64encode(k).decode().rstrip("=") for k in (self.role_password_key, self.binding_key)]
        return ".".join([PREFIX, *parts])

    def role_password(self, role: str) -> str:
        return credentials.password_for(self.role_password_key, role)
