"""The audit log: one row for every admin write, in the same transaction as the write; and its
reading, newest first, by tenant, actor, action and time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.catalog.models import AuditLog
from control_plane.schemas import AuditEntryOut, AuditPage
from control_plane.services import cursors
from control_plane.services.lookup import find_tenant


def record(session: AsyncSession, actor: str, action: str, target_type: str, target_id: object,
           **details: Any) -> None:
    session.add(AuditLog(actor=actor, action=action, target_type=target_type,
                         target_id=None if target_id is None else str(target_id), details=details))


class AuditService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def list(self, *, tenant: str | None, actor: str | None, action: str | None,
                   since: dt.datetime | None, limit: int, cursor: str | None) -> AuditPage:
        query = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit + 1)
        if actor:
            query = query.where(AuditLog.actor == actor)
        if action:
            query = query.where(AuditLog.action == action)
        if since is not None:
            query = query.where(AuditLog.at >= since)
        if cursor:
            query = query.where(tuple_(AuditLog.at, AuditLog.id) < cursors.decode_int(cursor))
        async with self.sessions() as session:
            if tenant:
                found = await find_tenant(session, tenant, include_deleted=True)
                query = query.where(AuditLog.target_type == "tenant", AuditLog.target_id == str(found.id))
            rows = (await session.scalars(query)).all()
        items = [AuditEntryOut(id=r.id, at=r.at, actor=r.actor, action=r.action, target_type=r.target_type,
                               target_id=r.target_id, details=r.details) for r in rows[:limit]]
        more = len(rows) > limit
        return AuditPage(items=items, next_cursor=cursors.encode(items[-1].at, items[-1].id) if more else None)
