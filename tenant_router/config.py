"""The router's settings: a frozen struct, built once and handed to the plugin."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec


class RouterConfig(msgspec.Struct, frozen=True, kw_only=True):
    catalog_dsn: str  # read-only use: placements are looked up here
    secret_key: str  # derives tenant role passwords (see credentials.py)
    redis_url: str | None = None  # placement invalidations arrive here
    apex: str = "localhost"  # tenants are {slug}.{apex}
    jwt_secret: str | None = None  # HS256; tokens carry a `tenant_id` claim and must carry `exp`
    jwt_leeway_seconds: int = 5
    cache_ttl_seconds: float = 30.0  # backstop only: invalidations drop entries at once
    negative_ttl_seconds: float = 2.0  # unknown tenants are cached briefly too
    pool_max_size: int = 5
    connect_timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "RouterConfig":
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "catalog_dsn": env.get("CATALOG_DATABASE_URL"),
            "secret_key": env.get("SECRET_KEY"),
            "redis_url": env.get("REDIS_URL") or None,
            "apex": env.get("TENANT_APEX") or "localhost",
            "jwt_secret": env.get("TENANT_JWT_SECRET") or None,
        }
        values.update(overrides)
        return msgspec.convert({k: v for k, v in values.items() if v is not None}, cls, strict=False)
