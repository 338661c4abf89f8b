"""SCRAM-SHA-256 password verifiers (RFC 5802 / 7677), computed here so that a plain-text password
never travels in SQL text, where statement logging on the server could record it. This is what
psql's \\password and libpq's PQencryptPasswordConn do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# PostgreSQL's default is 4096, which is there to slow down guessing of human passwords. Tenant
# role passwords are 256-bit HMAC outputs (tenant_router/credentials.py): nothing to guess, so a
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
