"""The shapes the router, the control plane and the provisioner exchange: tiers, statuses, and a
tenant's placement as the router needs it."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from contracts.tiers import TierLayout


class Tier(str, enum.Enum):
    dedicated = "dedicated"
    schema = "schema"
    shared = "shared"


class TenantStatus(str, enum.Enum):
    provisioning = "provisioning"
    active = "active"
    suspended = "suspended"
    maintenance = "maintenance"
    deleting = "deleting"
    deleted = "deleted"
    failed = "failed"


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """Where one tenant's data lives, as the router needs it (no secrets)."""

    tenant_id: uuid.UUID
    slug: str
    status: TenantStatus
    tier: Tier
    server_id: uuid.UUID | None
    host: str | None
    port: int | None
    database: str | None
    role: str | None
    schema: str | None
    version: int
    plan: str | None = None
    features: frozenset[str] = frozenset()  # the plan's features with the tenant's overrides applied
    rate_limit_per_minute: int | None = None  # from the plan; None means unlimited
    billing_status: str = "ok"  # ok | past_due
    server_budget: int = 100  # the server's connection capacity (catalog: capacity_connections)
    tenant_revision: str | None = None
    sslmode: str | None = None

    @property
    def pool_key(self) -> PoolKey:
        """The pool this placement is served from, as its tier lays it out (contracts/tiers.py)."""
        assert self.host and self.port and self.database and self.role
        return _layout(self.tier).pool_key(self)

    @property
    def login_role(self) -> str:
        return _layout(self.tier).login_role(self)


class PoolKey(msgspec.Struct, frozen=True, kw_only=True):
    """One asyncpg pool per key. The placement version is part of it, so a moved tenant can
    never be served from a pool that still points at its old database."""

    host: str
    port: int
    database: str
    role: str
    version: int
    shared: bool = False  # serves many tenants: a per-tenant cap applies inside it
    sslmode: str | None = None  # the server's, from the catalog (None: libpq's default, prefer)


_LAYOUTS: Mapping[Tier, TierLayout] | None = None


def _layout(tier: Tier) -> TierLayout:
    # looked up on first use (contracts/tiers.py builds on the shapes above), then kept: every
    # routed transaction asks for its pool key
    global _LAYOUTS
    if _LAYOUTS is None:
        from contracts.tiers import LAYOUTS

        _LAYOUTS = LAYOUTS
    return _LAYOUTS[tier]
