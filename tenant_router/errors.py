"""Router errors: each has an HTTP status and a stable code; the plugin renders them as RFC 9457
problem details. Unknown tenants and tenants one may not see answer alike (404)."""

from __future__ import annotations


class RouterError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"
    headers: dict[str, str] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidToken(RouterError):
    status, code, title = 401, "invalid_token", "Invalid or expired token"
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class TenantNotFound(RouterError):
    status, code, title = 404, "tenant_not_found", "Tenant not found"


class TenantMismatch(RouterError):
    status, code, title = 403, "tenant_mismatch", "Token is for another tenant"


class TenantSuspended(RouterError):
    status, code, title = 403, "tenant_suspended", "Tenant is suspended"


class TenantUnavailable(RouterError):
    status, code, title = 503, "tenant_unavailable", "Tenant is not available yet"
    headers = {"Retry-After": "2"}


class NoTenantScope(RouterError):
    """A connection was asked for outside a resolved tenant: a programming error, never a leak."""

    status, code, title = 500, "no_tenant_scope", "No tenant scope"
