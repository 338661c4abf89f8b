"""A user's role in a tenant, read from the catalog's memberships table and cached briefly.

Entries live a few seconds at most and are dropped at once when the tenant's placement is
invalidated (the control plane announces membership changes like any other change), so a
removed member loses access within one Redis round trip.
"""

from __future__ import annotations

import time
import uuid

import asyncpg

from contracts.placement import Placement

_SELECT_ROLE = "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2"


class RoleCache:
    def __init__(self, catalog: asyncpg.Pool, ttl: float = 5.0, max_entries: int = 50_000) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, dict[uuid.UUID, tuple[float, str | None]]] = {}
        self._size = 0

    async def role(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
        now = time.monotonic()
        entry = self._entries.get(tenant_id, {}).get(user_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        role = await self.catalog.fetchval(_SELECT_ROLE, tenant_id, user_id)
        if self._size >= self.max_entries:  # a crude bound: start over rather than grow without end
            self._entries.clear()
            self._size = 0
        users = self._entries.setdefault(tenant_id, {})
        self._size += user_id not in users
        users[user_id] = (now + self.ttl, role)  # "not a member" is cached too
        return role

    def drop(self, placement: Placement) -> None:
        """An on_drop callback of the directory: the tenant changed, forget its roles."""
        self._size -= len(self._entries.pop(placement.tenant_id, {}))
