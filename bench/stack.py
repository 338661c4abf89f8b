"""A benchmark's own servers: an embedded PostgreSQL and an embedded Valkey in a temporary folder,
a migrated catalog, and one registered database server. Everything is stopped and removed when the
`bench_stack()` block ends, also when the benchmark inside it raises."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from control_plane.embedded import EmbeddedPostgres, EmbeddedRedis, remove_tree
from control_plane.settings import Settings
from migrations import runner
from tenant_router.config import RouterConfig

CATALOG_DB = "tp_bench_catalog"
SERVER_NAME = "bench-1"


@dataclass
class Stack:
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    settings: Settings

    @property
    def catalog_dsn(self) -> str:
        return self.settings.catalog_database_url

    def router_config(self, **overrides: object) -> RouterConfig:
        return RouterConfig(catalog_dsn=self.catalog_dsn, secret_key=self.settings.secret_key,
                            redis_url=self.redis.url, apex="localhost",
                            jwt_secret=self.settings.tenant_jwt_secret, **overrides)  # type: ignore[arg-type]


async def _register_server(settings: Settings, dsn: str, capacity_databases: int,
                           capacity_connections: int) -> None:
    """Through the control plane's own service, as `tenantctl register-server` does."""
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.schemas import RegisterServer
    from control_plane.services.servers import ServerService
    from provisioning.sealing import SecretBox

    engine = create_engine(settings.catalog_database_url, pool_size=1)
    try:
        service = ServerService(sessionmaker(engine), SecretBox(settings.secret_key))
        await service.register("bench", RegisterServer(
            name=SERVER_NAME, dsn=dsn, capacity_databases=capacity_databases,
            capacity_connections=capacity_connections))
    finally:
        await engine.dispose()


@asynccontextmanager
async def bench_stack(name: str, *, max_connections: int, capacity_connections: int,
                      capacity_databases: int = 10_000) -> AsyncIterator[Stack]:
    """PostgreSQL (fsync off, `max_connections`) holding both the catalog and the tenant databases,
    as `make run` does; the server is registered with `capacity_connections` as the router's budget."""
    root = Path(tempfile.mkdtemp(prefix=f"tenantplane-bench-{name}-"))
    pg = EmbeddedPostgres(root / "pg", fast=True, max_connections=max_connections)
    redis = EmbeddedRedis(root / "redis")
    try:
        pg.start()
        redis.start()
        admin = await asyncpg.connect(pg.dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{CATALOG_DB}"')
        finally:
            await admin.close()
        settings = Settings.from_env(
            {}, catalog_database_url=pg.dsn(CATALOG_DB), secret_key="bench-secret-" + secrets.token_hex(24),
            redis_url=redis.url, admin_token="tpa_" + secrets.token_urlsafe(24),
            tenant_jwt_secret="bench-jwt-" + secrets.token_hex(24))
        await runner.upgrade("catalog", settings.catalog_database_url)
        await _register_server(settings, pg.dsn(), capacity_databases, capacity_connections)
        yield Stack(pg=pg, redis=redis, settings=settings)
    finally:
        redis.stop()
        pg.stop()
        remove_tree(root)
