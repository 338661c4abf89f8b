"""Admin API keys: checked by digest; the bootstrap token from settings is stored hashed."""

from __future__ import annotations

import hmac

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import AdminApiKey
from control_plane.tokens import hash_token


class AdminAuth:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def ensure_bootstrap_token(self, token: str, name: str = "bootstrap") -> None:
        digest = hash_token(token)
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
        async with self.sessions() as session:
            row = (await session.execute(
                select(AdminApiKey.name, AdminApiKey.token_sha256)
                .where(AdminApiKey.token_sha256 == digest, AdminApiKey.revoked_at.is_(None)))).first()
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            raise errors.Unauthorized("the admin token is not valid")
        return f"api-key:{row.name}"
