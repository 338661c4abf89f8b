"""Side effects that leave the catalog: wake the workers, tell routers a placement changed."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from provisioning.pipelines import WAKE_CHANNEL
from tenant_router.contracts import INVALIDATION_CHANNEL

log = logging.getLogger("tenantplane.notify")


async def wake_workers(session: AsyncSession) -> None:
    # NOTIFY is transactional: workers hear it at commit, when the operation row is visible.
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})


async def placement_changed(redis: Any, tenant_id: uuid.UUID) -> None:
    if redis is None:
        return
    try:
        await redis.publish(INVALIDATION_CHANNEL, str(tenant_id))
    except Exception as exc:  # Redis down: routers fall back to their TTL
        log.warning("could not publish invalidation for %s: %s", tenant_id, type(exc).__name__)
