"""The in-process placement cache: entries by key, with an index from tenant id to its keys (an
invalidation drops a tenant's keys without scanning) and a bound on "no such tenant" entries (random
Host names must not fill memory)."""

from __future__ import annotations

from contracts.placement import Placement
from tenant_router.resolution import TenantKey

MAX_UNKNOWN = 10_000

Entry = tuple[float, Placement | None]  # (expires at, on the monotonic clock; the placement or None)


class PlacementCache:
    def __init__(self, ttl: float, negative_ttl: float, max_unknown: int = MAX_UNKNOWN) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_unknown = max_unknown
        self.entries: dict[TenantKey, Entry] = {}  # read directly by the directory's hot path
        self._keys_of: dict[str, set[TenantKey]] = {}  # tenant id -> its keys in `entries`
        self._unknown: set[TenantKey] = set()  # keys cached as "no such tenant"

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: TenantKey) -> bool:
        return key in self.entries

    @property
    def unknown_count(self) -> int:
        return len(self._unknown)

    def store(self, key: TenantKey, placement: Placement | None, now: float) -> None:
        if placement is None and len(self._unknown) >= self.max_unknown:
            for old in list(self._unknown):
                self.drop(old)
        self.entries[key] = (now + (self.ttl if placement else self.negative_ttl), placement)
        if placement is None:
            self._unknown.add(key)
        else:
            self._unknown.discard(key)
            self._keys_of.setdefault(str(placement.tenant_id), set()).add(key)

    def drop(self, key: TenantKey) -> Placement | None:
        """Forget `key`; the placement it held, if any."""
        entry = self.entries.pop(key, None)
        self._unknown.discard(key)
        if entry is None or entry[1] is None:
            return None
        keys = self._keys_of.get(str(entry[1].tenant_id))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[str(entry[1].tenant_id)]
        return entry[1]

    def keys_to_drop(self, tenant_id: str) -> list[TenantKey]:
        """What a change of `tenant_id` (`*`: anything) makes stale: the tenant's keys, and every
        "no such tenant" entry (the change may be the tenant's creation, or a name set free)."""
        if tenant_id == "*":
            return list(self.entries)
        return [*self._keys_of.get(tenant_id, ()), *self._unknown, TenantKey("id", tenant_id)]
