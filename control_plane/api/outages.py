"""The catalog cannot be reached: 503 `catalog_unavailable` with Retry-After instead of 500. Every
query of the control plane goes to the catalog (registering a server handles its own connects),
so an unreachable database met by a handler is the catalog."""

from __future__ import annotations

from litestar import Request, Response

from tenant_router.outages import unreachable
from tenant_router.problems import EXCEPTION_HANDLERS, problem

RETRY_AFTER_SECONDS = 5
_internal_error = EXCEPTION_HANDLERS[Exception]


def unhandled(request: Request, exc: Exception) -> Response:
    if unreachable(exc):
        return problem(503, "catalog_unavailable", "Catalog unavailable",
                       "the catalog database cannot be reached right now; try again shortly",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})
    return _internal_error(request, exc)


HANDLERS = {**EXCEPTION_HANDLERS, Exception: unhandled}
