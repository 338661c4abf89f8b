"""The one place that owns the current tenant: a ContextVar set by `tenant_scope()` and always reset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from contracts.placement import Placement
from tenant_router.errors import NoTenantScope

_current: ContextVar[Placement | None] = ContextVar("tenantplane_current_tenant", default=None)


@contextmanager
def tenant_scope(placement: Placement) -> Iterator[Placement]:
    token = _current.set(placement)
    try:
        yield placement
    finally:
        _current.reset(token)


def current_tenant() -> Placement:
    placement = _current.get()
    if placement is None:
        raise NoTenantScope("no tenant is bound to this task")
    return placement


def current_tenant_or_none() -> Placement | None:
    return _current.get()
