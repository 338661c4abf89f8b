"""The two variants under comparison, both in this process, against the same PostgreSQL server.

- routed: the demo application exactly as shipped (`demo_app.app.create_app`), i.e. the tenant
  router resolves the Host, looks the placement up, gates it, borrows from the tenant's pool and
  opens the transaction.
- fixed: the same handler function (`list_projects.fn`, the very same body) in a Litestar app with
  the same exception handlers, before-request hook and body limit, whose `db` dependency is one
  plain `asyncpg.Pool` on one tenant database (logged in as that tenant's role) with the same
  transaction around the handler. What is left between the two is the router's work.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import asyncpg
from litestar import Litestar, get
from litestar.di import Provide

from bench.fleet import Tenant
from bench.stack import Stack
from contracts.credentials import role_password
from tenant_router.config import RouterConfig
from tenant_router.runtime import router_of

__all__ = ["fixed_app", "fixed_pool", "routed_app", "router_of"]


def routed_app(config: RouterConfig) -> Litestar:
    from demo_app.app import create_app

    return create_app(config)


async def fixed_pool(stack: Stack, tenant: Tenant, size: int) -> asyncpg.Pool:
    """A warm pool of `size` connections on `tenant`'s database, as its own role."""
    return await asyncpg.create_pool(
        host="127.0.0.1", port=stack.pg.port, database=tenant.database, user=tenant.role,
        password=role_password(stack.settings.secret_key, tenant.role), min_size=size, max_size=size)


def fixed_app(pool: asyncpg.Pool) -> Litestar:
    from demo_app.app import list_projects
    from tenant_router.problems import EXCEPTION_HANDLERS, require_json_body

    async def provide_db() -> AsyncGenerator[asyncpg.Connection, None]:
        async with pool.acquire() as conn, conn.transaction():
            yield conn

    return Litestar(
        route_handlers=[get("/api/projects")(list_projects.fn)],
        dependencies={"db": Provide(provide_db)},
        exception_handlers=dict(EXCEPTION_HANDLERS),  # type: ignore[arg-type]
        before_request=require_json_body,
        request_max_body_size=64 * 1024,
        logging_config=None,  # as the demo app: logging is the process's (bench/__main__.py)
    )
