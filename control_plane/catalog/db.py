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


def create_engine(dsn: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(dsn), pool_size=pool_size, max_overflow=5,
                               pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def single_statement(session: AsyncSession) -> AsyncConnection:
    """The session's connection without a transaction around it (AUTOCOMMIT), for a use case that
    is one statement, atomic on its own: no BEGIN and COMMIT/ROLLBACK round trips around it. Call
    it before anything else runs on the session."""
    return await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
