"""The catalog engine (SQLAlchemy 2 async over asyncpg)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from migrations.runner import sqlalchemy_url

CONNECT_TIMEOUT = 5.0  # seconds (CATALOG_CONNECT_TIMEOUT_SECONDS): asyncpg's own default is 60
STATEMENT_TIMEOUT = 30.0  # seconds one statement's reply may take (CATALOG_STATEMENT_TIMEOUT_SECONDS)


def create_engine(dsn: str, pool_size: int = 10, *, connect_timeout: float = CONNECT_TIMEOUT,
                  statement_timeout: float = STATEMENT_TIMEOUT) -> AsyncEngine:
    """Bounded on both sides of a catalog that stops answering: a connect gives up after
    `connect_timeout`, a statement after `statement_timeout` (asyncpg's command_timeout, checked by
    the client, so it holds when the server is black-holed too); the caller then answers 503."""
    return create_async_engine(sqlalchemy_url(dsn), pool_size=pool_size, max_overflow=5, pool_pre_ping=True,
                               pool_timeout=statement_timeout,
                               connect_args={"timeout": connect_timeout, "command_timeout": statement_timeout})


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def single_statement(session: AsyncSession) -> AsyncConnection:
    """The session's connection without a transaction around it (AUTOCOMMIT), for a use case that
    is one statement, atomic on its own: no BEGIN and COMMIT/ROLLBACK round trips around it. Call
    it before anything else runs on the session."""
    return await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
