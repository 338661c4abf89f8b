"""Side effects that leave the catalog: tell routers a placement changed (the workers are woken by
the statements that queue operations, provisioning/queue.py)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from contracts.channels import INVALIDATION_CHANNEL, placement_redis_key
from provisioning.announcements import announce_placement_change

log = logging.getLogger("tenantplane.notify")


async def placement_changed(redis: Any, tenant_id: uuid.UUID, aliases: list[tuple[str, str]] = ()) -> None:
    """After commit: drop the shared copy of the placement and tell every router."""
    await announce_placement_change(redis, tenant_id, aliases)


# Past this many tenants one "*" (drop everything) is cheaper than one message per tenant.
BROADCAST_ABOVE = 500


async def placements_changed(redis: Any, tenant_ids: list[uuid.UUID]) -> None:
    """Announce many tenants at once (e.g. everyone on a plan that changed)."""
    if redis is None or not tenant_ids:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(tenant_ids), 1000):
                pipe.delete(*(placement_redis_key(t) for t in tenant_ids[start:start + 1000]))
            if len(tenant_ids) > BROADCAST_ABOVE:
                pipe.publish(INVALIDATION_CHANNEL, "*")
            else:
                for tenant_id in tenant_ids:
                    pipe.publish(INVALIDATION_CHANNEL, str(tenant_id))
            await pipe.execute()
    except Exception as exc:  # Redis down: routers fall back to their TTL
        log.warning("could not publish invalidations for %d tenants: %s", len(tenant_ids), type(exc).__name__)
