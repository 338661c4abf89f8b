"""Announcing a routing-relevant catalog change: drop the shared (Redis) copy, then publish, so
every router process drops its local copy at once. Used by the control plane and the provisioner
after they commit; best effort (a router's TTL is the backstop while Redis is down)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from tenant_router.contracts import INVALIDATION_CHANNEL, alias_redis_key, placement_redis_key

log = logging.getLogger("tenantplane.invalidation")


async def announce_placement_change(redis: Any, tenant_id: object,
                                    aliases: Iterable[tuple[str, str]] = ()) -> None:
    if redis is None:
        return
    try:
        keys = [placement_redis_key(tenant_id), *(alias_redis_key(kind, value) for kind, value in aliases)]
        async with redis.pipeline(transaction=False) as pipe:  # one round trip, in this order
            pipe.delete(*keys)
            pipe.publish(INVALIDATION_CHANNEL, str(tenant_id))
            await pipe.execute()
    except Exception as exc:  # Redis down must not fail the change that was already committed
        log.warning("could not announce placement change for %s: %s", tenant_id, type(exc).__name__)
