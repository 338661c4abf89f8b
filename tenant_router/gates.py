"""Gates on a resolved tenant, each a small function raising a RouterError.

`check_status` and `admit` run in the router's middleware for every request; `requires_feature`
and `requires_role` are Litestar guards for the handlers that need them:

    @get("/api/analytics/export", guards=[requires_feature("analytics_export")])
    @delete("/api/projects/{id:int}", guards=[requires_role("owner", "admin")])
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.handlers import BaseRouteHandler
from litestar.types import Message, Scope

from contracts.placement import Placement, TenantStatus
from tenant_router.context import current_tenant
from tenant_router.errors import (
    CatalogUnavailable,
    FeatureNotEnabled,
    PaymentRequired,
    RateLimited,
    RoleRequired,
    TenantMigrating,
    TenantNotFound,
    TenantSuspended,
    TenantUnavailable,
)
from tenant_router.ratelimit import TenantRateLimiter
from tenant_router.runtime import router_of

log = logging.getLogger("tenantplane.router.gates")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLES = frozenset({"owner", "admin", "member", "viewer"})
RATE_LIMIT_STATE = "tenantplane_rate_limit"  # scope state: the RateLimit-* headers for the response
BILLING_STATE = "tenantplane_billing"  # scope state: the Billing-Status header during a grace

Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None] | None]


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


def check_billing(placement: Placement, now: float, state: dict[str, Any]) -> None:
    """A past-due tenant keeps working until its grace ends, every answer saying so in
    `Billing-Status: past_due; grace-until="<ISO time>"`; then 402. No grace recorded (an admin
    set the status by hand): 402 at once."""
    if placement.billing_status != "past_due":
        return
    grace = placement.billing_grace_until
    if grace is None or grace.timestamp() <= now:
        raise PaymentRequired("this tenant's account is past due; settle the invoice to continue")
    until = grace.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    state[BILLING_STATE] = {"Billing-Status": f'past_due; grace-until="{until}"'}


async def check_rate(limiter: TenantRateLimiter, placement: Placement, state: dict[str, Any]) -> None:
    per_minute = placement.rate_limit_per_minute
    if not per_minute:  # no plan, or a plan without a limit
        return
    decision = await limiter.hit(placement.tenant_id, per_minute)
    if decision is None:  # Redis down: fail open (the limiter has logged it)
        return
    if not decision.allowed:
        raise RateLimited(f"this tenant's plan allows {per_minute} requests per minute", decision.headers())
    state[RATE_LIMIT_STATE] = decision.headers()


def check_revision(placement: Placement, minimum: str | None) -> None:
    """Tenants still below the revision this application needs wait for their migration."""
    if minimum and (placement.tenant_revision or "") < minimum:
        raise TenantMigrating(f"this tenant is at {placement.tenant_revision}; the application needs {minimum}")


async def admit(limiter: TenantRateLimiter, min_revision: str | None, placement: Placement,
                state: dict[str, Any], now: float | None = None) -> None:
    """Per-request admission after the status gate: revision, billing, then the plan's rate limit.
    `now` is the router's clock (a test's, to walk through the grace period)."""
    check_revision(placement, min_revision)
    check_billing(placement, time.time() if now is None else now, state)
    await check_rate(limiter, placement, state)


async def rate_limit_headers(message: Message, scope: Scope) -> None:
    """A before_send hook: the gates' headers on every answer, admitted ones too: RateLimit-* (a 429
    carries its own) and, during a billing grace, Billing-Status (also on refusals after it)."""
    if message["type"] != "http.response.start":
        return
    state = scope.get("state", {})
    for key in (RATE_LIMIT_STATE, BILLING_STATE):
        values = state.get(key)
        if values:
            headers = MutableScopeHeaders.from_message(message)
            for name, value in values.items():
                if headers.get(name) is None:
                    headers[name] = value


def requires_feature(feature: str) -> Guard:
    """A guard: the tenant's plan (with its overrides) must include `feature`, else 403
    `feature_not_enabled` with `"upgrade": true`."""

    def guard(_: ASGIConnection, __: BaseRouteHandler) -> None:
        if feature not in current_tenant().features:
            raise FeatureNotEnabled(f"{feature!r} is not included in this tenant's plan", feature)

    guard.__name__ = f"requires_feature_{feature}"
    return guard


def _user_id(connection: ASGIConnection) -> uuid.UUID | None:
    claims = connection.scope.get("state", {}).get("auth_claims") or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or len(sub) > 64:
        return None
    try:
        return uuid.UUID(sub)
    except ValueError:
        return None


def requires_role(*roles: str) -> Guard:
    """A guard: the token's `sub` must be a member of the request's tenant with one of `roles`,
    else 403 `role_required` (also without a token, or with a token that names no user)."""
    unknown = set(roles) - ROLES
    if not roles or unknown:
        raise ValueError(f"roles must be some of {sorted(ROLES)}, got {roles!r}")
    allowed = frozenset(roles)
    wanted = " or ".join(roles)

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        placement = current_tenant()
        user_id = _user_id(connection)
        if user_id is None:
            raise RoleRequired(f"this needs a signed-in member with role {wanted}", roles)
        try:
            role = await router_of(connection.app).roles.role(placement.tenant_id, user_id)
        except Exception as exc:  # catalog down: refuse, never guess
            log.warning("role lookup failed: %s", type(exc).__name__)
            raise CatalogUnavailable("roles cannot be checked right now") from None
        if role not in allowed:
            raise RoleRequired(f"this needs role {wanted} in this tenant", roles)

    guard.__name__ = f"requires_role_{'_'.join(roles)}"
    return guard
