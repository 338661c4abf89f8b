"""Side effects that leave the catalog: tell routers a placement changed (the workers are woken by
the statements that queue operations, provisioning/queue.py). `announcer` is the process's
BatchedAnnouncements (bounded sends; failures written to the catalog's announcement outbox, which
the workers deliver), or None without Redis."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.catalog.driver_sql import DriverSQL
from provisioning import announcement_outbox
from provisioning.announcements import BROADCAST_ABOVE, Item, Outbox, announce_placement_change

__all__ = ["BROADCAST_ABOVE", "catalog_outbox", "placement_changed", "placements_changed"]


def catalog_outbox(engine: AsyncEngine) -> Outbox:
    """Where this process's BatchedAnnouncements writes what Redis did not take: the catalog's
    announcement outbox, in a transaction of its own (the change it announces has committed)."""

    async def keep(items: Sequence[Item], broadcast: bool) -> None:
        async with engine.begin() as conn:
            await announcement_outbox.keep(DriverSQL(conn), items, broadcast)

    return keep


async def placement_changed(announcer: Any, tenant_id: uuid.UUID, aliases: list[tuple[str, str]] = ()) -> None:
    """After commit: drop the shared copy of the placement and tell every router."""
    if announcer is None:
        return
    if hasattr(announcer, "announce"):
        await announcer.announce(tenant_id, aliases)
    else:  # a bare Redis client: one bounded send
        await announce_placement_change(announcer, tenant_id, aliases)


async def placements_changed(announcer: Any, tenant_ids: list[uuid.UUID]) -> None:
    """Announce many tenants at once (e.g. everyone on a plan that changed)."""
    if announcer is not None and tenant_ids:
        await announcer.announce_many(tenant_ids)
