"""A request's tenant, resolved from its headers and gated: the part every framework's glue shares
(the Litestar middleware and plugin, and the plain ASGI middleware in asgi.py)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from contracts.placement import Placement
from tenant_router import resolution
from tenant_router.errors import TenantMismatch, TenantNotFound
from tenant_router.gates import admit, check_status
from tenant_router.metrics import PLACEMENT_STATE
from tenant_router.runtime import TenantRouter

_ROUTING_HEADERS = frozenset({b"host", b"authorization", b"x-tenant-id", b"x-service-token"})
@functools.lru_cache(maxsize=8)
def unrouted_matcher(prefixes: tuple[str, ...]) -> re.Pattern[str]:
    """The application's own endpoints (RouterConfig.unrouted_paths), whole path segments only:
    `/health` and `/health/live` are unrouted, while `/healthcare` or `/metrics-export` are tenant
    routes and must be resolved and gated."""
    if not prefixes:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("(?:" + "|".join(re.escape(p) for p in prefixes) + r")(?:/|\Z)")


def routing_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The headers resolution reads, in one pass over the raw ASGI list (names arrive lowercased);
    the first of repeated headers counts, as with Litestar's `Headers.get()`."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name in _ROUTING_HEADERS:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def _host_matches(router: TenantRouter, host_key: resolution.TenantKey, placement: Placement) -> bool:
    if host_key.kind == "slug":
        return host_key.value == placement.slug
    # a host outside the apex that is no tenant's domain is the application's own name
    by_host = await router.directory.get_placement_cached(host_key)
    return by_host is None or by_host.tenant_id == placement.tenant_id


async def resolve_tenant(router: TenantRouter, headers: Mapping[str, str], method: str,
                         state: dict[str, Any]) -> Placement:
    """The request's tenant, gated. Verified token claims are left in `state["auth_claims"]`.
    Unknown tenants, and tenants a caller may not see, answer alike (404)."""
    config = router.config
    host_key = resolution.key_from_host(headers.get("host"), config.apex)
    token = resolution.bearer_token(headers.get("authorization"))
    tenant_header = headers.get("x-tenant-id")
    if token is not None:
        claims = resolution.verified_claims(token, config)
        state["auth_claims"] = claims
        key = resolution.TenantKey("id", str(resolution.tenant_id_from_claims(claims)))
    elif tenant_header is not None:
        key = resolution.trusted_tenant(tenant_header, headers.get("x-service-token"), config)
    elif host_key is not None:
        key = host_key
    else:
        raise TenantNotFound("the request names no tenant (use {slug}.%s or a tenant token)" % config.apex)
    placement = await router.directory.get_placement_cached(key)
    if placement is None:
        raise TenantNotFound("no such tenant")
    if key is not host_key and host_key is not None and not await _host_matches(router, host_key, placement):
        raise TenantMismatch("the credentials name another tenant than the host")
    state[PLACEMENT_STATE] = placement  # for metrics and the access log, also if a gate refuses
    check_status(placement, method)
    await admit(router.limiter, config.min_tenant_revision, placement, state, router.clock())
    return placement
