"""An `AsyncSession` on the connection the router lent for the current tenant transaction.

    async with tenant_transaction() as conn:          # or the Litestar plugin's `db`
        async with session_on(conn) as session:
            session.add(Project(name="x"))
            await session.commit()                    # a savepoint: the request's COMMIT is the real one

One transaction, one binding: the session runs on the router's connection (never a connection of
its own), so it sees exactly what the tenant's binding allows, and its work is committed or rolled
back with the router's transaction. `session.commit()` / `rollback()` are a savepoint's RELEASE /
ROLLBACK TO (the connection's `transaction()` inside a routed transaction is a savepoint), so a
rollback undoes what the session did and the request goes on.

How: one process-wide engine whose pool hands out, as its "new connection", the connection of the
session being opened (a ContextVar), and never closes it (the router owns it). SQLAlchemy's
asyncpg dialect is used as is, so the ORM, Core and advanced-alchemy repositories work unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import asyncpg
from litestar import Request
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from tenant_router import asgi
from tenant_router.binding import tenant_transaction
from tenant_router.context import current_tenant
from tenant_router.runtime import router_of

_lent: ContextVar[asyncpg.Connection | None] = ContextVar("tenantplane_sqlalchemy_connection", default=None)
_engine: AsyncEngine | None = None


class BorrowedPool(NullPool):
    """A "pool" of connections lent by the router: checked in, they are only forgotten."""

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # the router's connection: its transaction ends, and it is reset and returned, with the request
        return None


_CODECS_SET = "_tp_sqlalchemy_codecs"  # on the router's pooled connection, once its codecs are SQLAlchemy's


class LentDialect(PGDialect_asyncpg):
    """SQLAlchemy's asyncpg dialect, setting its json/jsonb codecs once per pooled connection
    rather than on every session (each `set_type_codec` costs a query and drops asyncpg's
    statement cache, which the router's raw asyncpg users of that connection would pay for)."""

    # a subclass must say so itself, or SQLAlchemy compiles every statement again on every
    # execution (nothing here changes how statements compile)
    supports_statement_cache = True

    async def setup_asyncpg_json_codec(self, conn: Any) -> None:
        if not getattr(_pooled(conn), _CODECS_SET, False):
            await super().setup_asyncpg_json_codec(conn)

    async def setup_asyncpg_jsonb_codec(self, conn: Any) -> None:
        pooled = _pooled(conn)
        if not getattr(pooled, _CODECS_SET, False):
            await super().setup_asyncpg_jsonb_codec(conn)
            setattr(pooled, _CODECS_SET, True)  # json's is set just before (the dialect's order)


def _pooled(adapted: Any) -> Any:
    lent = adapted._connection  # the router's ConnectionProxy
    return getattr(lent, "_con", None) or lent


registry.register("postgresql.tenantplane_lent", __name__, "LentDialect")


async def _lent_connection() -> asyncpg.Connection:
    conn = _lent.get()
    if conn is None:
        raise RuntimeError("session_on() opens sessions; no routed connection is being lent")
    return conn


def tenant_engine() -> AsyncEngine:
    """The process's one engine for tenant sessions (it holds no connection of its own)."""
    global _engine
    if _engine is None:
        _engine = create_async_engine("postgresql+tenantplane_lent://", async_creator=_lent_connection, poolclass=BorrowedPool,
                                      pool_reset_on_return=None)
    return _engine


@contextlib.asynccontextmanager
async def session_on(conn: asyncpg.Connection, **session_options: Any) -> AsyncIterator[AsyncSession]:
    """An AsyncSession on `conn` (a connection from the router's tenant_transaction), closed at the
    end of the block; what it left uncommitted is rolled back to its savepoint. `expire_on_commit`
    is off by default, as SQLAlchemy advises for asyncio (no lazy load after a commit)."""
    session_options.setdefault("expire_on_commit", False)
    token = _lent.set(conn)
    try:
        connection = await tenant_engine().connect()
    finally:
        _lent.reset(token)
    try:
        async with AsyncSession(bind=connection, **session_options) as session:
            yield session
    finally:
        await connection.close()



async def provide_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A Litestar dependency beside the plugin's `db`: `Provide(provide_session)`. It opens the
    request's tenant transaction itself rather than depending on `db` (Litestar ends a handler's
    dependencies concurrently, so the session could otherwise outlive its connection); a handler
    that wants raw SQL too takes it from the session (`await session.connection()`)."""
    router = router_of(request.app)
    async with tenant_transaction(router.pools, current_tenant(), router.config.budget_fraction) as conn:
        async with session_on(conn) as session:
            yield session


async def tenant_session() -> AsyncIterator[AsyncSession]:
    """The same for Starlette and FastAPI behind asgi.TenantMiddleware:
    `Depends(tenant_session, scope="function")` (the transaction ends before the response)."""
    async with asgi.tenant_transaction() as conn:
        async with session_on(conn) as session:
            yield session
