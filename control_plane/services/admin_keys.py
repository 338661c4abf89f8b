"""Admin API keys: create one (its token shown once, only the digest stored), list, revoke. The
bootstrap token from settings is the key named `bootstrap` (services/auth.py keeps it current)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import AdminApiKey
from control_plane.schemas import AdminKeyCreated, AdminKeyList, AdminKeyOut, CreateAdminKey
from control_plane.services import audit
from control_plane.services.auth import AdminAuth
from control_plane.tokens import hash_token, new_token


def _out(key: AdminApiKey) -> AdminKeyOut:
    return AdminKeyOut(id=key.id, name=key.name, scopes=list(key.scopes), created_at=key.created_at,
                       created_by=key.created_by, expires_at=key.expires_at, revoked_at=key.revoked_at)


class AdminKeyService:
    def __init__(self, sessions: async_sessionmaker, auth: AdminAuth) -> None:
        self.sessions = sessions
        self.auth = auth

    async def create(self, actor: str, body: CreateAdminKey) -> AdminKeyCreated:
        if body.expires_at is not None:
            if body.expires_at.tzinfo is None:
                raise errors.Unprocessable("expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
            if body.expires_at <= dt.datetime.now(dt.UTC):
                raise errors.Unprocessable("expires_at is in the past")
        token = new_token()
        scopes = sorted(set(body.scopes))
        try:
            async with self.sessions() as session, session.begin():
                key = AdminApiKey(name=body.name, token_sha256=hash_token(token), scopes=scopes,
                                  expires_at=body.expires_at, created_by=actor)
                session.add(key)
                await session.flush()
                audit.record(session, actor, "admin_key.create", "admin_key", key.id, name=body.name, scopes=scopes,
                             expires_at=body.expires_at.isoformat() if body.expires_at else None)
                await session.refresh(key)
                out = _out(key)
        except IntegrityError:
            raise errors.AdminKeyNameTaken(f"an admin key named {body.name!r} exists already") from None
        return AdminKeyCreated(key=out, token=token)

    async def list(self) -> AdminKeyList:
        async with self.sessions() as session:
            keys = (await session.scalars(select(AdminApiKey).order_by(AdminApiKey.created_at, AdminApiKey.name))).all()
        return AdminKeyList(items=[_out(k) for k in keys])

    async def revoke(self, actor: str, name: str) -> AdminKeyOut:
        """Revoked at once in this process; other API processes stop accepting it within
        auth.REMEMBER_SECONDS. Revoking twice answers the same."""
        async with self.sessions() as session, session.begin():
            key = await session.scalar(select(AdminApiKey).where(AdminApiKey.name == name).with_for_update())
            if key is None:
                raise errors.AdminKeyNotFound(f"no admin key {name[:100]!r}")
            if key.revoked_at is None:
                await session.execute(update(AdminApiKey).where(AdminApiKey.id == key.id)
                                      .values(revoked_at=func.now()))
                audit.record(session, actor, "admin_key.revoke", "admin_key", key.id, name=name)
                await session.flush()
                await session.refresh(key)
            out = _out(key)
        self.auth.forget()
        return out
