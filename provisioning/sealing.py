"""Secrets at rest in the catalog (database server passwords): AES-256-GCM from the
`cryptography` package, under a key derived from the deployment's SECRET_KEY. The catalog row id
is bound in as associated data, so a sealed value cannot be moved to another row."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.credentials import role_password, subkey

_VERSION = b"v1"


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        self._aead = AESGCM(subkey(secret_key, "catalog-encryption"))
        self._secret_key = secret_key

    def role_password(self, role: str) -> str:
        """The login role's derived password (credentials.py), for checks that it still holds."""
        return role_password(self._secret_key, role)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return (_VERSION + b":" + base64.urlsafe_b64encode(nonce + sealed)).decode()

    def open(self, token: str, context: str) -> str:
        version, _, body = token.encode().partition(b":")
        if version != _VERSION:
            raise ValueError("unknown secret format")
        raw = base64.urlsafe_b64decode(body)
        return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
