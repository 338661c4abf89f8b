"""The router's settings: a frozen struct, built once and handed to the plugin."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

from contracts.router_key import RouterKeys

# every tuning knob, from the environment too (strings converted and checked by msgspec)
_TUNING_ENV = {
    field: "ROUTER_" + field.upper() for field in (
        "jwt_leeway_seconds", "cache_ttl_seconds", "cache_stale_seconds", "cache_preload_max", "redis_ttl_seconds",
        "negative_ttl_seconds", "tenant_max_connections", "shared_pool_max_connections", "acquire_timeout_seconds",
        "connect_timeout_seconds", "pool_idle_seconds", "connection_idle_seconds")
}

# what an operator set, for errors: msgspec names the struct's field, the operator knows the variable
_ENV_NAMES = {"catalog_dsn": "CATALOG_DATABASE_URL", "secret_key": "SECRET_KEY", "router_key": "ROUTER_KEY",
              "redis_url": "REDIS_URL", "apex": "TENANT_APEX", "jwt_secret": "TENANT_JWT_SECRET",
              "jwt_issuer": "TENANT_JWT_ISSUER", "min_tenant_revision": "TENANT_MIN_REVISION",
              "jwt_audience": "TENANT_JWT_AUDIENCE", "jwt_public_keys": "TENANT_JWT_PUBLIC_KEYS",
              "catalog_connect_timeout_seconds": "CATALOG_CONNECT_TIMEOUT_SECONDS",
              "catalog_statement_timeout_seconds": "CATALOG_STATEMENT_TIMEOUT_SECONDS",
              "service_token_sha256": "ROUTER_SERVICE_TOKENS", "unrouted_paths": "ROUTER_UNROUTED_PATHS",
              "budget_fraction": "ROUTER_BUDGET_FRACTION",
              **_TUNING_ENV}


def _name_variables(message: str) -> str:
    """msgspec's "Object missing required field `catalog_dsn`" and "... - at `$.cache_ttl_seconds`"
    as "set the environment variable CATALOG_DATABASE_URL" and "... in ROUTER_CACHE_TTL_SECONDS"."""
    def name(match: re.Match[str]) -> str:
        return _ENV_NAMES.get(match.group(1), match.group(1))

    message = re.sub(r"Object missing required field `([a-z_0-9]+)`",
                     lambda m: f"set the environment variable {name(m)}", message)
    return re.sub(r"at `\$\.([a-z_0-9]+)[^`]*`", lambda m: f"in {name(m)}", message)


def _budget_share(env: Mapping[str, str]) -> float | None:
    """ROUTER_BUDGET_FRACTION (default 1) divided by ROUTER_REPLICAS (default 1): N replicas of one
    application each take 1/N of every server's connection budget, so together they never
    oversubscribe a server (the control plane's workers have their own share)."""
    fraction, replicas = env.get("ROUTER_BUDGET_FRACTION"), env.get("ROUTER_REPLICAS")
    if fraction is None and replicas is None:
        return None
    try:
        share, count = float(fraction or 1.0), int(replicas or 1)
    except ValueError:
        raise ValueError("ROUTER_BUDGET_FRACTION must be a number and ROUTER_REPLICAS a whole number") from None
    if not 0 < share <= 1 or count < 1:
        raise ValueError("ROUTER_BUDGET_FRACTION must be in (0, 1] and ROUTER_REPLICAS at least 1")
    return share / count


class RouterConfig(msgspec.Struct, frozen=True, kw_only=True):
    catalog_dsn: str  # read-only use: placements are looked up here
    # the key material: ROUTER_KEY (contracts/router_key.py: only what routing needs, from
    # `tenantctl router-key`) or, failing that, the deployment's SECRET_KEY itself
    secret_key: str | None = None
    router_key: str | None = None
    redis_url: str | None = None  # placement invalidations arrive here
    apex: str = "localhost"  # tenants are {slug}.{apex}
    jwt_secret: str | None = None  # HS256; tokens carry a `tenant_id` claim and must carry `exp`
    # public keys by key id (`kid`), PEM text, for RS256 / ES256 tokens: {"kid": {"alg": "RS256", "key": PEM}}
    jwt_public_keys: dict[str, dict[str, str]] = {}
    jwt_issuer: str | None = None  # when set, `iss` is required and must match
    jwt_audience: str | None = None  # when set, `aud` is required and must match
    jwt_leeway_seconds: int = 5
    # SHA-256 hex digests of service tokens; a caller presenting one in X-Service-Token may name
    # the tenant in X-Tenant-ID (trusted internal services only)
    service_token_sha256: frozenset[str] = frozenset()
    # tenants below this tenant revision (ids `tNNNN`, ordered as text) answer 503 until migrated
    min_tenant_revision: str | None = None
    cache_ttl_seconds: float = 30.0  # backstop only: invalidations drop entries at once
    # after its TTL, an entry is still answered for this long while one lookup refreshes it in the
    # background, but only while this process is subscribed to invalidations (0 turns it off)
    cache_stale_seconds: float = 60.0
    # warm start: placements of up to this many live tenants are read in one query at startup
    cache_preload_max: int = 10_000
    redis_ttl_seconds: float = 600.0  # the shared Redis copy (deleted by every invalidation too)
    negative_ttl_seconds: float = 2.0  # unknown tenants are cached briefly too
    tenant_max_connections: int = 5  # per-tenant cap (the size of a dedicated tenant's pool)
    shared_pool_max_connections: int = 20  # size of a schema/shared database's pool
    budget_fraction: float = 1.0  # share of each server's capacity_connections this process may use
    acquire_timeout_seconds: float = 5.0  # how long a request waits for a connection before 503
    connect_timeout_seconds: float = 5.0
    # the catalog's pool: a lookup of a tenant not cached answers 503 after these at most
    catalog_connect_timeout_seconds: float = 5.0  # CATALOG_CONNECT_TIMEOUT_SECONDS
    catalog_statement_timeout_seconds: float = 10.0  # CATALOG_STATEMENT_TIMEOUT_SECONDS
    pool_idle_seconds: float = 60.0  # pools unused this long are closed
    connection_idle_seconds: float = 30.0  # idle connections are closed after this
    # add a `tenant` label (the tenant id) to the request and refusal metrics: one series per tenant,
    # so only for fleets small enough for the metrics backend
    metrics_tenant_label: bool = False
    # the application's own endpoints, outside tenant resolution and every gate: a path is one of
    # them when it equals a prefix or continues it with "/" (so /healthcare is a tenant route)
    unrouted_paths: tuple[str, ...] = ("/health", "/schema", "/metrics", "/-/router")

    def keys(self) -> RouterKeys:
        """Role-password and binding keys: from router_key when given, else derived from secret_key."""
        if self.router_key:
            return RouterKeys.parse(self.router_key)
        if self.secret_key:
            return RouterKeys.from_secret_key(self.secret_key)
        raise ValueError("set ROUTER_KEY (printed by `tenantctl router-key`) or SECRET_KEY")

    def __post_init__(self) -> None:
        if self.router_key:
            RouterKeys.parse(self.router_key)  # a malformed one fails at start, not at the first request
        for prefix in self.unrouted_paths:
            if not prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
                raise ValueError(f"an unrouted path is '/' and segments without a trailing '/': {prefix!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "RouterConfig":
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "catalog_dsn": env.get("CATALOG_DATABASE_URL"),
            "secret_key": env.get("SECRET_KEY") or None,
            "router_key": env.get("ROUTER_KEY") or None,
            "redis_url": env.get("REDIS_URL") or None,
            "apex": env.get("TENANT_APEX") or "localhost",
            "jwt_secret": env.get("TENANT_JWT_SECRET") or None,
            "jwt_issuer": env.get("TENANT_JWT_ISSUER") or None,
            "min_tenant_revision": env.get("TENANT_MIN_REVISION") or None,
            "jwt_audience": env.get("TENANT_JWT_AUDIENCE") or None,
            "catalog_connect_timeout_seconds": env.get("CATALOG_CONNECT_TIMEOUT_SECONDS") or None,
            "catalog_statement_timeout_seconds": env.get("CATALOG_STATEMENT_TIMEOUT_SECONDS") or None,
        }
        if env.get("TENANT_JWT_PUBLIC_KEYS"):  # JSON: {"kid": {"alg": "RS256", "key": "-----BEGIN ..."}}
            values["jwt_public_keys"] = msgspec.json.decode(env["TENANT_JWT_PUBLIC_KEYS"])
        if env.get("ROUTER_SERVICE_TOKENS"):  # comma-separated tokens; only their digests are kept
            import hashlib

            values["service_token_sha256"] = [hashlib.sha256(t.strip().encode()).hexdigest()
                                              for t in env["ROUTER_SERVICE_TOKENS"].split(",") if t.strip()]
        for field, name in _TUNING_ENV.items():
            if env.get(name):
                values[field] = env[name]
        values["budget_fraction"] = _budget_share(env)
        if env.get("ROUTER_METRICS_TENANT_LABEL"):
            values["metrics_tenant_label"] = env["ROUTER_METRICS_TENANT_LABEL"].strip().lower() in ("1", "true", "yes")
        if env.get("ROUTER_UNROUTED_PATHS") is not None:  # comma-separated prefixes; empty: none
            values["unrouted_paths"] = [p.strip() for p in env["ROUTER_UNROUTED_PATHS"].split(",") if p.strip()]
        values.update(overrides)
        if not values.get("router_key") and not values.get("secret_key"):
            raise ValueError("set ROUTER_KEY (printed by `tenantctl router-key`) or SECRET_KEY")
        try:
            return msgspec.convert({k: v for k, v in values.items() if v is not None}, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(_name_variables(str(exc))) from None
