"""Admin key scopes, and which ones a request needs.

Every admin controller names its area (`opt={"area": ...}`); the admin guard asks `allowed()` with
the request's method. `admin` allows everything; a handler without an area needs `admin` (closed
by default)."""

from __future__ import annotations

from typing import Literal

Scope = Literal["tenants:read", "tenants:write", "billing", "servers", "admin"]
SCOPES: tuple[str, ...] = ("tenants:read", "tenants:write", "billing", "servers", "admin")
Area = Literal["tenants", "servers", "billing", "admin"]

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def needed(area: str | None, method: str) -> frozenset[str]:
    """The scopes any one of which allows `method` in `area` (`admin` always does)."""
    read = method.upper() in _READS
    if area == "tenants":
        return frozenset({"tenants:read", "tenants:write"} if read else {"tenants:write"})
    if area == "servers":
        return frozenset({"servers", "tenants:read"} if read else {"servers"})
    if area == "billing":
        return frozenset({"billing"})
    return frozenset({"admin"})


def allowed(granted: frozenset[str] | tuple[str, ...], area: str | None, method: str) -> bool:
    return "admin" in granted or not needed(area, method).isdisjoint(granted)
