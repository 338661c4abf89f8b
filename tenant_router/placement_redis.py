"""The shared Redis copy of placements, and the listener for invalidations.

A placement is stored once under its tenant id; slugs and domains are aliases to that id, so one
delete (the control plane's invalidation) removes the copy for every name. A Redis error is
handed to `on_error` and the lookup answers as if Redis had no copy (the caller goes on from the
catalog).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from contracts.channels import INVALIDATION_CHANNEL, alias_redis_key, placement_redis_key
from contracts.placement import Placement, TenantStatus
from tenant_router.resolution import TenantKey

log = logging.getLogger("tenantplane.router.directory")

_ALIAS_TTL = 3600  # slugs never change; a removed domain's alias is deleted by the control plane
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Placement)


class RedisPlacements:
    def __init__(self, redis: Any, ttl: float, on_error: Callable[[Exception], None]) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl))
        self.on_error = on_error

    async def get(self, key: TenantKey) -> Placement | None:
        try:
            tenant_id = key.value if key.kind == "id" else await self.redis.get(alias_redis_key(key.kind, key.value))
            if tenant_id is None:
                return None
            if isinstance(tenant_id, bytes):
                tenant_id = tenant_id.decode()
            raw = await self.redis.get(placement_redis_key(tenant_id))
        except Exception as exc:
            self.on_error(exc)
            return None
        if raw is None:
            return None
        placement = _decoder.decode(raw)
        if key.kind == "slug" and (placement.slug != key.value or placement.status is TenantStatus.deleted):
            return None  # a stale alias (the slug was freed and reused): ask the catalog
        return placement

    async def put(self, key: TenantKey, placement: Placement) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(placement_redis_key(placement.tenant_id), _encoder.encode(placement), ex=self.ttl)
                if key.kind != "id":
                    pipe.set(alias_redis_key(key.kind, key.value), str(placement.tenant_id), ex=_ALIAS_TTL)
                await pipe.execute()
        except Exception as exc:
            self.on_error(exc)


class InvalidationListener:
    """Calls `invalidate(tenant_id)` for every announced change. `listening` is true while
    subscribed; on every (re)subscription everything is invalidated (`*`), since messages may have
    been missed meanwhile."""

    def __init__(self, invalidate: Callable[[str], None]) -> None:
        self.invalidate = invalidate
        self.listening = False

    async def run(self, redis: Any, ready: asyncio.Event | None = None) -> None:
        """Runs until cancelled; reconnects after Redis errors."""
        while True:
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                self.invalidate("*")
                self.listening = True
                if ready is not None:
                    ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.invalidate(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation listener lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                self.listening = False
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
