from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from contracts.credentials import role_password
from provisioning import scram
from provisioning.sealing import SecretBox

KEY = "k" * 40


def test_sealed_values_open_only_with_the_same_key_and_row():
    box = SecretBox(KEY)
    sealed = box.seal("hunter2", "row-1")
    assert "hunter2" not in sealed
    assert box.open(sealed, "row-1") == "hunter2"
    with pytest.raises(InvalidTag):
        box.open(sealed, "row-2")
    with pytest.raises(InvalidTag):
        SecretBox("z" * 40).open(sealed, "row-1")


def test_role_passwords_are_stable_per_key_and_role():
    assert role_password(KEY, "tp_role_a") == role_password(KEY, "tp_role_a")
    assert role_password(KEY, "tp_role_a") != role_password(KEY, "tp_role_b")
    assert role_password(KEY, "tp_role_a") != role_password("q" * 40, "tp_role_a")


def test_scram_verifier_matches_rfc7677_construction():
    salt = b"0123456789abcdef"
    verifier = scram.verifier("pencil", salt=salt, iterations=4096)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    assert method == "SCRAM-SHA-256"
    assert iterations_salt == "4096:" + base64.b64encode(salt).decode()
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert keys.split(":")[0] == base64.b64encode(stored).decode()


async def test_a_roles_salted_password_is_derived_once_per_process(pg):
    import asyncpg

    remembering = scram.remember_salted_passwords()
    # None would mean asyncpg no longer derives it through its protocol module's `hashlib`
    assert remembering is not None and scram.remember_salted_passwords() is remembering
    role, password = f"tp_scram_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    dsn = lambda pw: f"postgresql://{role}:{pw}@127.0.0.1:{pg.port}/postgres?sslmode=disable"  # noqa: E731
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{scram.verifier(password, iterations=4096)}'")
        before = remembering.computed
        for _ in range(3):
            conn = await asyncpg.connect(dsn(password))
            assert await conn.fetchval("SELECT current_user") == role
            await conn.close()
        assert remembering.computed == before + 1
        with pytest.raises(asyncpg.InvalidPasswordError):  # remembered per password: a wrong one still fails
            await asyncpg.connect(dsn("not-" + password))
        # the password set again (a new salt): derived anew, and it logs in
        await admin.execute(f"ALTER ROLE {role} PASSWORD '{scram.verifier(password, iterations=4096)}'")
        conn = await asyncpg.connect(dsn(password))
        await conn.close()
        assert remembering.computed == before + 3  # the wrong password, then the new salt
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
