"""Per-tenant rate limits by plan, counted in Redis with the `limits` library.

The moving-window strategy: each hit is one atomic Lua script in Redis (count and record in one
step), so every router process shares one count per tenant and a burst at a window boundary
cannot double the limit (as a fixed window would allow). Keys carry the tenant id and the limit,
so one tenant exhausting its limit leaves the others untouched, and a plan change starts a fresh
count.

Redis down must not take every tenant down with it: calls are bounded by a short timeout, and
after a failure the limiter stays open (admits without counting) for a cooldown, logging a
warning, instead of paying the timeout on every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Any

import msgspec
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from contracts.channels import RATE_LIMIT_KEY_PREFIX

log = logging.getLogger("tenantplane.router.ratelimit")

NAMESPACE = "tenantplane"
KEY_PREFIX = RATE_LIMIT_KEY_PREFIX  # contracts/channels.py: the delete purges these by name


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        values = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                  "RateLimit-Reset": str(self.reset_seconds)}
        if not self.allowed:
            values["Retry-After"] = str(max(1, self.reset_seconds))
        return values


def storage_uri(redis_url: str) -> str:
    """The `limits` storage URI for a redis-py URL (redis://, rediss://, unix://)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class TenantRateLimiter:
    def __init__(self, redis_url: str | None, connection_pool: Any = None, *, timeout: float = 0.5,
                 cooldown: float = 5.0) -> None:
        if redis_url:
            options: dict[str, Any] = {"connection_pool": connection_pool} if connection_pool is not None else {}
            storage: Any = RedisStorage(storage_uri(redis_url), implementation="redispy", key_prefix=KEY_PREFIX,
                                        **options)
        else:  # no Redis configured: counts are per process
            storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)
        self.timeout = timeout
        self.cooldown = cooldown
        self._open_until = 0.0
        self._items: dict[int, RateLimitItemPerMinute] = {}

    def _item(self, per_minute: int) -> RateLimitItemPerMinute:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute, namespace=NAMESPACE)
        return item

    async def hit(self, tenant_id: uuid.UUID, per_minute: int) -> Decision | None:
        """Count one request. None means the limiter could not decide (Redis down): admit it."""
        if time.monotonic() < self._open_until:
            return None
        item, key = self._item(per_minute), str(tenant_id)
        try:
            async with asyncio.timeout(self.timeout):
                allowed = await self.limiter.hit(item, key)
                stats = await self.limiter.get_window_stats(item, key)
        except Exception as exc:  # includes TimeoutError; cancellation still propagates
            self._open_until = time.monotonic() + self.cooldown
            log.warning("rate limiter unavailable (%s: %s); admitting requests uncounted for %.0f s",
                        type(exc).__name__, str(exc)[:200], self.cooldown)
            return None
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed=allowed, limit=per_minute, remaining=max(0, stats.remaining), reset_seconds=reset)
