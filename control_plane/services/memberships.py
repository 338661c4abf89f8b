"""Users and their memberships in tenants (one user may belong to many tenants).

Routers cache roles briefly; a membership change is announced on Redis after the commit, like
any other change to what a router admits, so the tenant's cached roles are dropped at once.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.models import Membership, Tenant, User
from control_plane.schemas import (
    CreateUser,
    MembershipList,
    MembershipOut,
    PutMembership,
    UserOut,
    UserPage,
)
from control_plane.services import audit, cursors, notify
from control_plane.services.lookup import find_tenant
from control_plane.services.plans import check_text, invalid

_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")


def _user_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.UserNotFound(f"no user {value!r}") from None


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching what starts with `text`, its wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _user_out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, name=user.name, created_at=user.created_at)


def _membership_query():
    return (select(Membership, Tenant.slug, User.email)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .join(User, User.id == Membership.user_id))


def _membership_out(row: Any) -> MembershipOut:
    m: Membership = row[0]
    return MembershipOut(tenant_id=m.tenant_id, tenant_slug=row.slug, user_id=m.user_id, email=row.email,
                         role=m.role, created_at=m.created_at)


class MembershipService:
    def __init__(self, sessions: async_sessionmaker, redis: Any = None) -> None:
        self.sessions = sessions
        self.redis = redis

    # --- users ---

    async def create_user(self, actor: str, body: CreateUser) -> UserOut:
        email = body.email.lower()
        if not _EMAIL.fullmatch(email):
            raise invalid("email", "body", "expected one address, local@domain")
        check_text(body.name, "name")
        async with self.sessions() as session, session.begin():
            user = User(id=uuid.uuid4(), email=email, name=body.name)
            session.add(user)
            try:
                await session.flush()
            except IntegrityError:
                raise errors.EmailTaken(f"a user with email {email!r} exists") from None
            audit.record(session, actor, "user.create", "user", user.id, email=email)
            await session.refresh(user)
        return _user_out(user)

    async def list_users(self, *, email: str | None, limit: int, cursor: str | None) -> UserPage:
        """Users newest first; `email` narrows to addresses starting with it (case-insensitive)."""
        query = select(User).order_by(User.created_at.desc(), User.id.desc()).limit(limit + 1)
        if email:
            query = query.where(User.email.ilike(_like_prefix(email)))
        if cursor:
            query = query.where(tuple_(User.created_at, User.id) < cursors.decode_uuid(cursor))
        async with self.sessions() as session:
            users = [_user_out(u) for u in (await session.scalars(query)).all()]
        last = users[limit - 1] if len(users) > limit else None
        return UserPage(items=users[:limit], next_cursor=cursors.encode(last.created_at, last.id) if last else None)

    async def get_user(self, user_id: str) -> UserOut:
        async with self.sessions() as session:
            return _user_out(await self._user(session, user_id))

    @staticmethod
    async def _user(session: AsyncSession, user_id: str) -> User:
        user = await session.get(User, _user_id(user_id))
        if user is None:
            raise errors.UserNotFound(f"no user {user_id!r}")
        return user

    async def user_memberships(self, user_id: str) -> MembershipList:
        async with self.sessions() as session:
            user = await self._user(session, user_id)
            rows = (await session.execute(_membership_query().where(
                Membership.user_id == user.id, Tenant.status != TenantStatus.deleted.value)
                .order_by(Tenant.slug))).all()
        return MembershipList(items=[_membership_out(r) for r in rows])

    # --- memberships ---

    async def tenant_memberships(self, key: str) -> MembershipList:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key)
            rows = (await session.execute(_membership_query().where(Membership.tenant_id == tenant.id)
                                          .order_by(User.email))).all()
        return MembershipList(items=[_membership_out(r) for r in rows])

    async def put(self, actor: str, key: str, user_id: str, body: PutMembership) -> MembershipOut:
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            user = await self._user(session, user_id)
            previous = await session.scalar(select(Membership.role).where(
                Membership.tenant_id == tenant.id, Membership.user_id == user.id))
            await session.execute(insert(Membership).values(user_id=user.id, tenant_id=tenant.id, role=body.role)
                                  .on_conflict_do_update(index_elements=["user_id", "tenant_id"],
                                                         set_={"role": body.role}))
            audit.record(session, actor, "membership.put", "tenant", tenant.id, user_id=str(user.id),
                         role=body.role, previous=previous)
            out = _membership_out((await session.execute(_membership_query().where(
                Membership.tenant_id == tenant.id, Membership.user_id == user.id))).one())
            noted = await notify.note(self.redis, session, [tenant.id]) if previous != body.role else []
        if previous != body.role:
            await notify.placement_changed(self.redis, tenant.id, noted=noted)
        return out

    async def delete(self, actor: str, key: str, user_id: str) -> None:
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            uid = _user_id(user_id)
            previous = await session.scalar(delete(Membership).where(
                Membership.tenant_id == tenant.id, Membership.user_id == uid).returning(Membership.role))
            if previous is None:
                raise errors.MembershipNotFound(f"user {user_id!r} is not a member of tenant {key!r}")
            audit.record(session, actor, "membership.delete", "tenant", tenant.id, user_id=str(uid),
                         previous=previous)
            noted = await notify.note(self.redis, session, [tenant.id])
        await notify.placement_changed(self.redis, tenant.id, noted=noted)
