"""A catalog connection of SQLAlchemy's, offering asyncpg's fetch/fetchrow/fetchval/execute, so that
provisioning's queue (written for asyncpg, `$n` placeholders) runs inside a session's transaction.
The statements go to the driver as they are (asyncpg's dialect passes `$n` through)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class DriverSQL:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _run(self, query: str, args: tuple[Any, ...]) -> Any:
        return await self._conn.exec_driver_sql(query, args or None)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return list((await self._run(query, args)).mappings().all())

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return (await self._run(query, args)).mappings().first()

    async def fetchval(self, query: str, *args: Any) -> Any:
        return (await self._run(query, args)).scalar()

    async def execute(self, query: str, *args: Any) -> None:
        await self._run(query, args)


class EngineSQL:
    """asyncpg's execute on an engine, each call a transaction of its own (for provisioning code
    that takes a pool, such as the announcement outbox)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def execute(self, query: str, *args: Any) -> None:
        async with self._engine.begin() as conn:
            await DriverSQL(conn).execute(query, *args)
