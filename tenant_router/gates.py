"""Gates on a resolved tenant, each a small function raising a RouterError."""

from __future__ import annotations

from typing import Any

from tenant_router.contracts import Placement, TenantStatus
from tenant_router.errors import TenantNotFound, TenantSuspended, TenantUnavailable

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_status(placement: Placement, method: str) -> None:
    status = placement.status
    if status in (TenantStatus.deleted, TenantStatus.deleting):
        raise TenantNotFound("no such tenant")
    if status is TenantStatus.suspended:
        raise TenantSuspended("this tenant is suspended")
    if status in (TenantStatus.provisioning, TenantStatus.failed):
        raise TenantUnavailable("this tenant is being provisioned")
    if status is TenantStatus.maintenance and method.upper() not in SAFE_METHODS:
        raise TenantUnavailable("this tenant is under maintenance; writes are paused")


async def admit(router: Any, placement: Placement, state: dict[str, Any]) -> None:
    """Per-request admission after the status gate (rate limits). `router` is the TenantRouter."""
    return None
