"""The delete's last step: the tenant's rate-limit windows in Redis (tenant_router/ratelimit.py),
deleted beside the placement copy that the delete's announcement drops, so nothing the routers
counted for the tenant outlives it (the reconciler would report them as `deleted_leftover`).

Found with SCAN on the windows' own prefix (never KEYS, which blocks the server for every other
client) and deleted in batches; a rerun finds what is left, or nothing. By the time this runs the
tenant is `deleting`, which routers refuse before they count a request. Redis away does not fail
the delete: the windows expire by themselves within their minute, and the reconciler reports any
still there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from contracts.channels import rate_limit_key_pattern
from provisioning.announcements import redis_client
from provisioning.context import StepContext

log = logging.getLogger("tenantplane.provisioning")

SCAN_COUNT = 1000
TIMEOUT_SECONDS = 5.0


async def delete_rate_limit_windows(redis: Any, tenant_id: object) -> int:
    """Every window of the tenant deleted; how many there were."""
    removed = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=rate_limit_key_pattern(tenant_id), count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= SCAN_COUNT:
            removed += await redis.delete(*batch)
            batch = []
    if batch:
        removed += await redis.delete(*batch)
    return removed


async def purge_rate_limits(ctx: StepContext) -> None:
    if not ctx.redis_url:
        return
    redis = redis_client(ctx.redis_url)
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await delete_rate_limit_windows(redis, ctx.tenant_id)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("rate-limit windows of tenant %s not purged (%s); they expire within a minute",
                    ctx.tenant_id, type(exc).__name__)
    finally:
        await redis.aclose()
