"""PoolRegistry: one lazily created asyncpg pool per PoolKey (server, database, role, version).

A pool logs in as the tenant's own role, so the database server itself refuses any other
tenant's database. Pools whose placement version is superseded are closed."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from tenant_router.contracts import PoolKey
from tenant_router.credentials import role_password

log = logging.getLogger("tenantplane.router.pools")


class PoolRegistry:
    def __init__(self, secret_key: str, max_size: int = 5, connect_timeout: float = 5.0) -> None:
        self._secret_key = secret_key
        self._max_size = max_size
        self._timeout = connect_timeout
        self._pools: dict[PoolKey, asyncpg.Pool] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}

    async def get(self, key: PoolKey) -> asyncpg.Pool:
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = await asyncpg.create_pool(
                    host=key.host, port=key.port, database=key.database, user=key.role,
                    password=role_password(self._secret_key, key.role), min_size=0,
                    max_size=self._max_size, timeout=self._timeout, max_inactive_connection_lifetime=60,
                )
                self._pools[key] = pool
                self._close_superseded(key)
        return pool

    def _close_superseded(self, key: PoolKey) -> None:
        for other in list(self._pools):
            if other.database == key.database and other.host == key.host and other.version < key.version:
                self.discard(other)

    def discard(self, key: PoolKey) -> None:
        pool = self._pools.pop(key, None)
        self._locks.pop(key, None)
        if pool is not None:
            asyncio.get_running_loop().create_task(self._close(pool))

    def discard_database(self, host: str, port: int, database: str) -> None:
        for key in [k for k in self._pools if (k.host, k.port, k.database) == (host, port, database)]:
            self.discard(key)

    @staticmethod
    async def _close(pool: asyncpg.Pool) -> None:
        try:
            await asyncio.wait_for(pool.close(), 10)
        except Exception:
            pool.terminate()

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(self._close(p) for p in pools), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._pools)
