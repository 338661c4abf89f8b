"""The shapes the router, the control plane and the provisioner exchange: statuses and a tenant's
placement as the router needs it (tiers and pool keys come from contracts/tiers.py)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import msgspec

from contracts.tiers import LAYOUTS, PoolKey, Tier

__all__ = ["Placement", "PoolKey", "TenantStatus", "Tier"]


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
    # past due: admitted (with a Billing-Status header) until then; None while past due: 402 at once.
    # A time, not a flag, so the grace ends on time in every router without an invalidation.
    billing_grace_until: dt.datetime | None = None
    server_budget: int = 100  # the server's connection capacity (catalog: capacity_connections)
    tenant_revision: str | None = None
    sslmode: str | None = None

    @property
    def pool_key(self) -> PoolKey:
        """The pool this placement is served from, as its tier lays it out (contracts/tiers.py)."""
        assert self.host and self.port and self.database and self.role
        return LAYOUTS[self.tier].pool_key(self)

    @property
    def login_role(self) -> str:
        return LAYOUTS[self.tier].login_role(self)
