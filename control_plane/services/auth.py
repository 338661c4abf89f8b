"""Admin API keys: checked by digest; the bootstrap token from settings is stored hashed.

A key found valid is remembered in the process for `REMEMBER_SECONDS`, so that a burst of admin
calls (onboarding automation: create, then wait on the operation) does not read the key table on
every request. The price: a key revoked in the catalog keeps working in a running API process for
at most that long. Failures are never remembered (a wrong token is read from the catalog each time).
"""

from __future__ import annotations

import hmac
import time

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import AdminApiKey
from control_plane.tokens import hash_token

REMEMBER_SECONDS = 5.0
_REMEMBER_AT_MOST = 1000  # keys remembered at once (then forgotten all together)


class AdminAuth:
    def __init__(self, sessions: async_sessionmaker, remember_seconds: float = REMEMBER_SECONDS) -> None:
        self.sessions = sessions
        self.remember_seconds = remember_seconds
        self._valid: dict[str, tuple[str, float]] = {}  # digest -> (actor, valid until: time.monotonic())

    async def ensure_bootstrap_token(self, token: str, name: str = "bootstrap") -> None:
        digest = hash_token(token)
        self._valid.clear()  # a rotated key is forgotten here at once (other processes: REMEMBER_SECONDS)
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(AdminApiKey).values(name=name, token_sha256=digest)
                .on_conflict_do_update(index_elements=[AdminApiKey.name],
                                       set_={"token_sha256": digest, "revoked_at": None}))

    async def authenticate(self, authorization: str | None) -> str:
        """The key's name (the audit actor) for a valid `Bearer <token>` header."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise errors.Unauthorized("send Authorization: Bearer <admin token>")
        digest = hash_token(token)
        remembered = self._valid.get(digest)
        if remembered is not None and remembered[1] > time.monotonic():
            return remembered[0]
        async with self.sessions() as session:
            row = (await session.execute(
                select(AdminApiKey.name, AdminApiKey.token_sha256)
                .where(AdminApiKey.token_sha256 == digest, AdminApiKey.revoked_at.is_(None)))).first()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            self._valid.pop(digest, None)
            raise errors.Unauthorized("the admin token is not valid")
        actor = f"api-key:{row.name}"
        if self.remember_seconds > 0:
            if len(self._valid) >= _REMEMBER_AT_MOST:
                self._valid.clear()
            self._valid[digest] = (actor, time.monotonic() + self.remember_seconds)
        return actor
