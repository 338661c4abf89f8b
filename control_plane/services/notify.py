"""Side effects that leave the catalog: tell routers a placement changed (the workers are woken by
the statements that queue operations, provisioning/queue.py). `announcer` is the process's
BatchedAnnouncements (bounded sends; what it could not send waits in the catalog's announcement
outbox, which the workers deliver), or None without Redis.

A service notes its announcement inside the transaction of the change (`note`: the outbox row
commits with the change or not at all) and announces it after the commit (`placement_changed` with
what `note` returned), so an API process that dies between its commit and its send loses nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from control_plane.catalog.db import create_engine
from control_plane.catalog.driver_sql import DriverSQL, EngineSQL
from control_plane.settings import Settings
from provisioning import announcement_outbox
from provisioning.announcements import BROADCAST_ABOVE, BatchedAnnouncements, Outbox, announce_placement_change, redis_client

__all__ = ["BROADCAST_ABOVE", "CatalogSide", "catalog_outbox", "note", "placement_changed", "placements_changed"]


class CatalogSide:
    """What a background duty of the control plane in a worker needs to change the catalog and
    announce it: a small catalog engine, and (with Redis) the same bounded, outboxed announcements
    as the API's. `close` releases all three."""

    def __init__(self, settings: Settings, pool_size: int) -> None:
        self.engine = create_engine(settings.catalog_database_url, pool_size=pool_size,
                                    connect_timeout=settings.catalog_connect_timeout_seconds,
                                    statement_timeout=settings.catalog_statement_timeout_seconds)
        self.redis = redis_client(settings.redis_url, settings.redis_timeout_seconds) if settings.redis_url else None
        self.announcer = (BatchedAnnouncements(self.redis, timeout=settings.redis_timeout_seconds,
                                               outbox=catalog_outbox(self.engine))
                          if self.redis is not None else None)

    async def close(self) -> None:
        if self.announcer is not None:
            await self.announcer.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def catalog_outbox(engine: AsyncEngine) -> Outbox:
    """The catalog's announcement outbox as this process's BatchedAnnouncements uses it (each write
    a transaction of its own: the change it announces has committed)."""
    return announcement_outbox.CatalogOutbox(EngineSQL(engine))


async def note(announcer: Any, session: AsyncSession, tenant_ids: Sequence[uuid.UUID],
               aliases: Sequence[tuple[str, str]] = ()) -> list[int]:
    """Inside the change's transaction: the outbox rows of its announcement (one per tenant; the
    aliases go with each). Nothing without an announcer (no Redis: nobody would deliver them) or
    for a bare Redis client (it cannot settle them)."""
    if not hasattr(announcer, "announce") or getattr(announcer, "outbox", None) is None or not tenant_ids:
        return []
    items = [(t, tuple(aliases)) for t in tenant_ids]
    return await announcement_outbox.note(DriverSQL(await session.connection()), items)


async def placement_changed(announcer: Any, tenant_id: uuid.UUID, aliases: Sequence[tuple[str, str]] = (),
                            noted: Sequence[int] = ()) -> None:
    """After commit: drop the shared copy of the placement and tell every router (`noted`: what
    `note` returned in the change's transaction)."""
    if announcer is None:
        return
    if hasattr(announcer, "announce"):
        await announcer.announce(tenant_id, aliases, noted=noted)
    else:  # a bare Redis client: one bounded send
        await announce_placement_change(announcer, tenant_id, aliases)


async def placements_changed(announcer: Any, tenant_ids: list[uuid.UUID], noted: Sequence[int] = ()) -> None:
    """Announce many tenants at once (e.g. everyone on a plan that changed)."""
    if announcer is not None and tenant_ids:
        await announcer.announce_many(tenant_ids, noted=noted)
