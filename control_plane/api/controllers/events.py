"""Lifecycle events: newest first, or after an id for consumers; an abandoned one sent again
(control_plane/services/events.py)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from control_plane.api.controllers.params import actor
from control_plane.schemas import (
    EventDeliveryState,
    EventOut,
    EventPage,
    EventsRedelivered,
    EventType,
    RedeliverEvents,
)
from control_plane.services.events import EventService


class EventController(Controller):
    path = "/v1/events"
    opt = {"area": "tenants"}  # the scopes it needs: control_plane/scopes.py
    tags = ["events"]

    @get("/", summary="Lifecycle events: newest first (`cursor` pages back), or oldest first after an id (`after`)",
         opt={"problems": (404,)})  # an unknown `tenant`
    async def list_events(
        self, events: NamedDependency[EventService],
        after: Annotated[int | None, Parameter(ge=0, le=2**63 - 1, description=(
            "events after this id, oldest first, for a consumer that keeps the last id it handled"))] = None,
        event_type: Annotated[EventType | None, Parameter(query="type")] = None,
        tenant: Annotated[str | None, Parameter(max_length=100, description="tenant id or slug")] = None,
        delivery_state: Annotated[EventDeliveryState | None, Parameter(
            query="state", description="the webhook delivery's state")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> EventPage:
        return await events.list(after=after, type_=event_type, tenant=tenant, limit=limit, cursor=cursor,
                                 state=delivery_state)

    @post("/{event_id:str}/redeliver", status_code=200,
          summary="Send an abandoned event again: pending, due now, with a new give-up window",
          opt={"problems": (404, 409)})
    async def redeliver(self, request: Request, events: NamedDependency[EventService],
                        event_id: Annotated[str, Parameter(max_length=40)]) -> EventOut:
        return await events.redeliver(actor(request), event_id)

    @post("/redeliver", status_code=200,
          summary="Send again the abandoned events of a tenant and/or a type (at most `limit`, the oldest first)",
          opt={"problems": (404,)})  # an unknown `tenant`
    async def redeliver_many(self, request: Request, events: NamedDependency[EventService],
                             data: JSONBody[RedeliverEvents]) -> EventsRedelivered:
        return await events.redeliver_many(actor(request), data)
