"""An `AsyncSession` on the connection the router lent for the current tenant transaction.

    async with tenant_transaction() as conn:          # or the Litestar plugin's `db`
        async with session_on(conn) as session:
            session.add(Project(name="x"))
            await session.commit()                    # a savepoint: the request's COMMIT is the real one

One transaction, one binding: the session runs on the router's connection (never a connection of
its own), so it sees exactly what the tenant's binding allows, and its work is committed or rolled
back with the router's transaction. A session's transaction is a savepoint, taken before its first
statement that may write: `session.rollback()` rolls back to it (what the session wrote is undone
and the request goes on), `session.commit()` keeps its work for the request's COMMIT. A statement
that fails before the session's first write has no savepoint to roll back to: the request's
transaction is then failed, as after a failed raw statement.

How: one process-wide engine whose pool hands out, as its "new connection", the connection of the
session being opened (a ContextVar), and never closes it (the router owns it). SQLAlchemy's
asyncpg dialect is used as is, so the ORM, Core and advanced-alchemy repositories work unchanged;
its driver connection is a LentConnection (lent.py), which keeps prepared statements on the pooled
connection across sessions and takes the session's savepoint only once the session may write.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import asyncpg
from litestar import Request
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg, PGExecutionContext_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from tenant_router import asgi
from tenant_router.binding import tenant_transaction
from tenant_router.context import current_tenant, current_tenant_or_none
from tenant_router.runtime import router_of
from tenant_sqlalchemy.lent import LentConnection
from tenant_sqlalchemy.reads import reads_only

_lent: ContextVar[asyncpg.Connection | None] = ContextVar("tenantplane_sqlalchemy_connection", default=None)
_engine: AsyncEngine | None = None


class BorrowedPool(NullPool):
    """A "pool" of connections lent by the router: checked in, they are only forgotten."""

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        # the router's connection: its transaction ends, and it is reset and returned, with the request
        return None


class LentExecutionContext(PGExecutionContext_asyncpg):
    def pre_exec(self) -> None:
        super().pre_exec()
        # tells the LentConnection whether this statement needs the session's savepoint first
        self.cursor._connection.writes_next = not reads_only(self.compiled)


class LentDialect(PGDialect_asyncpg):
    """SQLAlchemy's asyncpg dialect, installing no json/jsonb codecs on the pooled connection: they
    would stay there for the router's raw asyncpg borrowers after the session, and setting them per
    session drops asyncpg's statement cache. The session's statements decode their json columns
    instead (json_rows.py, through LentConnection.prepare)."""

    # a subclass must say so itself, or SQLAlchemy compiles every statement again on every
    # execution (nothing here changes how statements compile)
    supports_statement_cache = True
    execution_ctx_cls = LentExecutionContext

    async def setup_asyncpg_json_codec(self, conn: Any) -> None:
        return None

    async def setup_asyncpg_jsonb_codec(self, conn: Any) -> None:
        return None


registry.register("postgresql.tenantplane_lent", __name__, "LentDialect")


async def _lent_connection() -> LentConnection:
    conn = _lent.get()
    if conn is None:
        raise RuntimeError("session_on() opens sessions; no routed connection is being lent")
    placement = current_tenant_or_none()
    return LentConnection(conn, tenant_engine().sync_engine.dialect, placement.tenant_revision if placement else None)


def tenant_engine() -> AsyncEngine:
    """The process's one engine for tenant sessions (it holds no connection of its own)."""
    global _engine
    if _engine is None:
        def creator() -> Any:
            # the adapter keeps no statement cache of its own: LentConnection.prepare uses the
            # pooled connection's, which outlives the adapter (one per session)
            return engine.sync_engine.dialect.dbapi.connect(async_creator_fn=_lent_connection,
                                                            prepared_statement_cache_size=0)

        engine = create_async_engine("postgresql+tenantplane_lent://", creator=creator, poolclass=BorrowedPool,
                                     pool_reset_on_return=None)
        _engine = engine
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
