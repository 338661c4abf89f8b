from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.exceptions import InvalidTag

from provisioning import scram
from provisioning.sealing import SecretBox
from tenant_router.credentials import role_password

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
