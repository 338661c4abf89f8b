"""Side effects that leave the catalog: tell routers a placement changed (the workers are woken by
the statements that queue operations, provisioning/queue.py). `announcer` is the process's
BatchedAnnouncements (bounded sends, failures kept and sent again), or None without Redis."""

from __future__ import annotations

import uuid
from typing import Any

from provisioning.announcements import BROADCAST_ABOVE, announce_placement_change

__all__ = ["BROADCAST_ABOVE", "placement_changed", "placements_changed"]


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
