"""Lifecycle events, as GET /v1/events lists them. The statements are provisioning/events.py's (the one
owner of `tenant_events`); this maps them to the API's shapes.

Two ways to read: newest first, a page at a time (`cursor`), for people; or `after` an id, oldest
first, for consumers that keep the last id they handled and ask again (an event is listed there only
once every transaction that could still add an earlier one has ended, so none is skipped)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.schemas import EventOut, EventPage
from control_plane.services import cursors
from control_plane.services.lookup import find_tenant
from provisioning import events


def _out(event: events.Event) -> EventOut:
    return EventOut(id=event.id, type=event.type, tenant_id=event.tenant_id, operation_id=event.operation_id,
                    occurred_at=event.occurred_at, data=event.data)


class EventService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def list(self, *, after: int | None, type_: str | None, tenant: str | None, limit: int,
                   cursor: str | None) -> EventPage:
        if after is not None and cursor is not None:
            raise errors.InvalidCursor("give either `after` (oldest first) or `cursor` (newest first), not both")
        before = cursors.decode_int(cursor)[1] if cursor else None
        async with self.sessions() as session:
            tenant_id = (await find_tenant(session, tenant, include_deleted=True)).id if tenant else None
            found = await events.page(DriverSQL(await session.connection()), after=after, before=before,
                                      type_=type_, tenant_id=tenant_id, limit=limit + 1)
        items = [_out(e) for e in found[:limit]]
        if after is not None:
            return EventPage(items=items, next_cursor=None, next_after=items[-1].id if items else after)
        more = len(found) > limit
        return EventPage(items=items, next_after=None,
                         next_cursor=cursors.encode(items[-1].occurred_at, items[-1].id) if more else None)
