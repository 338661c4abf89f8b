"""The catalog engine (SQLAlchemy 2 async over asyncpg)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from migrations.runner import sqlalchemy_url


def create_engine(dsn: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(dsn), pool_size=pool_size, max_overflow=5,
                               pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
