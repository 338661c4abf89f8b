"""Lifecycle events, as GET /v1/events lists them, and an admin's redelivery of one whose delivery
was given up. The statements are provisioning/events.py's (the one owner of `tenant_events`); this
maps them to the API's shapes.

Two ways to read: newest first, a page at a time (`cursor`), for people; or `after` an id, oldest
first, for consumers that keep the last id they handled and ask again (an event is listed there only
once every transaction that could still add an earlier one has ended, so none is skipped)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.schemas import EventDeliveryOut, EventOut, EventPage, EventsRedelivered, RedeliverEvents
from control_plane.services import audit, cursors
from control_plane.services.lookup import find_tenant
from provisioning import events


def _out(listed: events.Listed) -> EventOut:
    event, d = listed.event, listed.delivery
    return EventOut(id=event.id, type=event.type, tenant_id=event.tenant_id, operation_id=event.operation_id,
                    occurred_at=event.occurred_at, data=event.data,
                    delivery=EventDeliveryOut(state=d.state, attempts=d.attempts, last_error=d.last_error,
                                              delivered_at=d.delivered_at, abandoned_at=d.abandoned_at))


def _event_id(key: str) -> int:
    # ids are bigint identities: a key that no id can be is "no such event", never a 500 from the cast
    if not (key.isascii() and key.isdigit()) or not 1 <= int(key) <= 2**63 - 1:
        raise errors.EventNotFound(f"no event {key!r}")
    return int(key)


class EventService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def list(self, *, after: int | None, type_: str | None, tenant: str | None, limit: int,
                   cursor: str | None, state: str | None = None) -> EventPage:
        if after is not None and cursor is not None:
            raise errors.InvalidCursor("give either `after` (oldest first) or `cursor` (newest first), not both")
        before = cursors.decode_int(cursor)[1] if cursor else None
        async with self.sessions() as session:
            tenant_id = (await find_tenant(session, tenant, include_deleted=True)).id if tenant else None
            found = await events.page(DriverSQL(await session.connection()), after=after, before=before,
                                      type_=type_, tenant_id=tenant_id, limit=limit + 1, state=state)
        items = [_out(e) for e in found[:limit]]
        if after is not None:
            return EventPage(items=items, next_cursor=None, next_after=items[-1].id if items else after)
        more = len(found) > limit
        return EventPage(items=items, next_after=None,
                         next_cursor=cursors.encode(items[-1].occurred_at, items[-1].id) if more else None)

    async def redeliver(self, actor: str, key: str) -> EventOut:
        """An abandoned event pending again, sent by the next delivery round, with a new give-up
        window; audited in the same transaction. `key` is the path's id: anything but one is 404."""
        event_id = _event_id(key)
        async with self.sessions() as session, session.begin():
            db = DriverSQL(await session.connection())
            redelivered = await events.redeliver(db, event_id)
            if redelivered is None:
                state = await events.delivery_state(db, event_id)
                if state is None:
                    raise errors.EventNotFound(f"no event {event_id}")
                raise errors.EventNotAbandoned(f"event {event_id} is {state}", state=state)
            listed, attempts = redelivered
            audit.record(session, actor, "event.redeliver", "event", event_id, type=listed.event.type,
                         tenant_id=str(listed.event.tenant_id), attempts=attempts, last_error=listed.delivery.last_error)
            return _out(listed)

    async def redeliver_many(self, actor: str, ask: RedeliverEvents) -> EventsRedelivered:
        """Up to `ask.limit` abandoned events of a tenant and/or a type pending again, the oldest
        first; one audit row names them all."""
        if ask.tenant is None and ask.type is None:
            raise errors.Unprocessable("name a `tenant`, a `type` or both (one event: POST /v1/events/{id}/redeliver)")
        async with self.sessions() as session, session.begin():
            tenant_id = (await find_tenant(session, ask.tenant, include_deleted=True)).id if ask.tenant else None
            db = DriverSQL(await session.connection())
            ids, more = await events.redeliver_abandoned(db, tenant_id=tenant_id, type_=ask.type, limit=ask.limit)
            if ids:
                audit.record(session, actor, "event.redeliver", "events", None, ids=ids,
                             tenant_id=None if tenant_id is None else str(tenant_id), type=ask.type)
        return EventsRedelivered(ids=ids, more=more)
