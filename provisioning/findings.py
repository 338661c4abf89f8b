"""One thing the reconciler found, as its report lists it (reconcile.py says which kinds there are).
A module of its own so that the reconciler's helpers (leftovers.py) can make findings too."""

from __future__ import annotations

import msgspec


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    server: str  # a server's name, or the place: "catalog", "store", "redis"
    object: str
    tenant_id: str | None = None
    detail: str = ""
