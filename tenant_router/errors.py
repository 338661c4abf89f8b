"""Router errors: each has an HTTP status and a stable code; the plugin renders them as RFC 9457
problem details. Unknown tenants and tenants one may not see answer alike (404)."""

from __future__ import annotations

from contracts.problems import ProblemError


class RouterError(ProblemError):
    pass


class InvalidToken(RouterError):
    status, code, title = 401, "invalid_token", "Invalid or expired token"
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class UntrustedHeader(RouterError):
    status, code, title = 401, "untrusted_tenant_header", "Tenant header from an untrusted caller"


class ServiceTokenRequired(RouterError):
    status, code, title = 401, "unauthorized", "Service credential required"


class TenantNotFound(RouterError):
    status, code, title = 404, "tenant_not_found", "Tenant not found"


class TenantMismatch(RouterError):
    status, code, title = 403, "tenant_mismatch", "Token is for another tenant"


class TenantSuspended(RouterError):
    status, code, title = 403, "tenant_suspended", "Tenant is suspended"


class TenantUnavailable(RouterError):
    status, code, title = 503, "tenant_unavailable", "Tenant is not available yet"
    headers = {"Retry-After": "2"}


class PoolExhausted(RouterError):
    status, code, title = 503, "pool_exhausted", "Too many connections in use"
    headers = {"Retry-After": "1"}


class NoTenantScope(RouterError):
    """A connection was asked for outside a resolved tenant: a programming error, never a leak."""

    status, code, title = 500, "no_tenant_scope", "No tenant scope"


class PaymentRequired(RouterError):
    status, code, title = 402, "payment_required", "Payment required"


class FeatureNotEnabled(RouterError):
    status, code, title = 403, "feature_not_enabled", "Feature not in this tenant's plan"

    def __init__(self, detail: str, feature: str) -> None:
        super().__init__(detail)
        self.extra = {"feature": feature, "upgrade": True}


class RoleRequired(RouterError):
    status, code, title = 403, "role_required", "Role required"

    def __init__(self, detail: str, roles: tuple[str, ...]) -> None:
        super().__init__(detail)
        self.extra = {"roles": list(roles)}


class RateLimited(RouterError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.headers = headers


class CatalogUnavailable(RouterError):
    status, code, title = 503, "catalog_unavailable", "Catalog unavailable"
    headers = {"Retry-After": "2"}


class TenantMigrating(RouterError):
    status, code, title = 503, "tenant_migrating", "Tenant is being migrated"
    headers = {"Retry-After": "5"}
