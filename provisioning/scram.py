"""SCRAM-SHA-256 password verifiers (RFC 5802 / 7677), computed here so that a plain-text password
never travels in SQL text, where statement logging on the server could record it. This is what
psql's \\password and libpq's PQencryptPasswordConn do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections import OrderedDict

# PostgreSQL's default is 4096, which is there to slow down guessing of human passwords. Tenant
# role passwords are 256-bit HMAC outputs (contracts/credentials.py): nothing to guess, so a
# low count loses nothing and saves every new router connection a few milliseconds of PBKDF2 on
# both ends.
ITERATIONS = 64


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class _RememberingHashlib:
    """`hashlib` as asyncpg's protocol module sees it, with `pbkdf2_hmac` remembered per (password,
    salt, iterations); everything else is hashlib itself."""

    def __init__(self, real: object, size: int) -> None:
        self._real, self._size = real, size
        self._salted: OrderedDict[tuple, bytes] = OrderedDict()
        self.computed = 0  # how many were actually computed (tests look)

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def pbkdf2_hmac(self, hash_name: str, password: bytes, salt: bytes, iterations: int,
                    dklen: int | None = None) -> bytes:
        key = (hash_name, password, salt, iterations, dklen)
        salted = self._salted.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, dklen)
            self.computed += 1
            self._salted[key] = salted
            if len(self._salted) > self._size:
                self._salted.popitem(last=False)
        else:
            self._salted.move_to_end(key)
        return salted


def remember_salted_passwords(size: int = 64) -> _RememberingHashlib | None:
    """Make asyncpg derive a role's SCRAM SaltedPassword once per process rather than on every
    connection, and return what it now uses (None: this asyncpg computes it elsewhere; connections
    then work as before, only slower).

    The derivation is PBKDF2 at the server's iteration count for the role (4096 for an admin role
    made with PostgreSQL's defaults): about 1.6 ms of CPU here, and a fleet migration opens one
    admin connection per tenant database, all with the same password and salt. RFC 7677 (section 4)
    names this cache as the way to avoid that cost while the salt and iteration count stay the same
    (pgbouncer keeps one too); a changed salt or count is simply another entry. What is kept is as
    sensitive as the password the process holds anyway, in its own memory only. asyncpg calls
    `hashlib.pbkdf2_hmac` through its protocol module's global `hashlib`, which is what this
    replaces (tests/provisioning/test_sealing_and_scram.py fails if that stops taking effect)."""
    try:
        from asyncpg.protocol import protocol
    except ImportError:  # pragma: no cover
        return None
    current = getattr(protocol, "hashlib", None)
    if isinstance(current, _RememberingHashlib):
        return current
    if current is not hashlib:
        return None
    remembering = _RememberingHashlib(hashlib, size)
    protocol.hashlib = remembering
    return remembering
