"""PoolRegistry: one lazily created pool per PoolKey (server, database, login role, placement
version); every pool of a server shares that server's connection budget.

- A dedicated tenant's pool logs in as the tenant's role and holds at most
  `tenant_max_connections`; a schema or shared database's pool logs in as its gateway or app role,
  holds up to `shared_pool_max_connections` and caps each tenant at `tenant_max_connections`.
- A connection takes a slot of its server's budget when opened and gives it back when closed, for
  whatever reason. A borrower with neither an idle connection nor a free slot reclaims an idle
  connection of another pool of the server and waits up to `acquire_timeout`, then gets
  `PoolExhausted` (503) rather than an error from the server.
- A released connection goes back clean (connection.RESET_SQL) or is closed; it is closed rather
  than kept idle when other pools of the server wait for a slot.
- A new placement version closes the pools of older versions of the same database.

Our own pool rather than asyncpg.Pool, because the budget is shared across pools: asyncpg's pool
commits a waiting borrower to one of its slots before knowing whether the server has room, which
deadlocks a full server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg

from contracts import guard
from contracts.placement import PoolKey
from contracts.router_key import RouterKeys
from tenant_router.connection import GuardedConnection, TenantConnection
from tenant_router.errors import PoolExhausted

log = logging.getLogger("tenantplane.router.pools")


def _wake_one(waiters: collections.deque[asyncio.Future]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class ServerBudget:
    """Open connections to one server, across every pool of this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.peak = 0
        self.waits = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    def try_take(self) -> bool:
        if self.open < self.limit:
            self.open += 1
            self.peak = max(self.peak, self.open)
            return True
        return False

    def give_back(self) -> None:
        self.open -= 1
        _wake_one(self.waiters)

    @property
    def has_waiters(self) -> bool:
        return any(not w.done() for w in self.waiters)


class TenantPool:
    def __init__(self, key: PoolKey, password: str, budget: ServerBudget, registry: "PoolRegistry") -> None:
        self.key = key
        self._password = password
        self.budget = budget
        self._registry = registry
        # a dedicated tenant's pool is capped per tenant; a shared database's pool serves many
        # tenants (each still capped, in PoolRegistry.connection)
        self.max_size = registry.shared_pool_max_connections if key.shared else registry.tenant_max_connections
        self.idle: list[tuple[TenantConnection, float]] = []  # LIFO: warm connections first
        self.open = 0
        self.lent = 0
        self.borrowers = 0  # lent + waiting
        self.last_used = time.monotonic()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self._live: set[int] = set()
        self.closed = False

    # a connection ends exactly once, whoever notices first (us, or asyncpg's termination listener)
    def _forget(self, conn: TenantConnection) -> None:
        if id(conn) in self._live:
            self._live.discard(id(conn))
            self.open -= 1
            self.budget.give_back()
            _wake_one(self.waiters)

    async def _connect(self) -> TenantConnection:
        key = self.key
        conn = await asyncpg.connect(host=key.host, port=key.port, database=key.database, user=key.role,
                                     password=self._password, timeout=self._registry.connect_timeout,
                                     connection_class=GuardedConnection if key.role in guard.TENANT_FACING_ROLES
                                     else TenantConnection, ssl=key.sslmode or "prefer")
        self._live.add(id(conn))
        # asyncpg calls it with what the borrower holds (a proxy, while lent): forget the connection
        conn.add_termination_listener(lambda _: self._forget(conn))
        self._registry.connects += 1
        return conn

    async def acquire(self, deadline: float) -> TenantConnection:
        loop = asyncio.get_running_loop()
        while True:
            while self.idle:
                conn, _ = self.idle.pop()
                if not conn.is_closed():
                    self.lent += 1
                    conn.lend()
                    return conn
                self._forget(conn)
            if self.open < self.max_size and self.budget.try_take():
                self.open += 1
                try:
                    conn = await self._connect()
                except BaseException:
                    self.open -= 1
                    self.budget.give_back()
                    raise
                self.lent += 1
                return conn
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolExhausted("no connection is free for this tenant; try again shortly")
            waiter = loop.create_future()
            self.waiters.append(waiter)
            if self.open < self.max_size:  # a slot would do too: ask for one
                self.budget.waits += 1
                self.budget.waiters.append(waiter)
                self._registry.reclaim_idle(self)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                raise PoolExhausted("no connection is free for this tenant; try again shortly") from None
            finally:
                for queue in (self.waiters, self.budget.waiters):
                    with contextlib.suppress(ValueError):
                        queue.remove(waiter)

    async def release(self, conn: TenantConnection) -> None:
        self.lent -= 1
        self.last_used = time.monotonic()
        if conn.is_closed() or self.closed:
            await self._close(conn)
            return
        try:
            if not conn.clean:  # else the reset went with the COMMIT (connection.py)
                await conn.reset(timeout=5)
        except BaseException:  # a failed or interrupted reset: the connection's state is unknown
            conn.terminate()
            self._forget(conn)
            raise
        if self.budget.has_waiters and not any(not w.done() for w in self.waiters):
            # another pool of this server waits for a slot: give it a surplus connection (ours if
            # we keep another one idle, else someone's surplus), ours only as the last resort
            if self.idle or not self._registry.reclaim_idle(self):
                await self._close(conn)
                return
        self.idle.append((conn, time.monotonic()))
        _wake_one(self.waiters)

    async def _close(self, conn: TenantConnection) -> None:
        try:
            await asyncio.wait_for(conn.close(), 2)
        except BaseException:
            conn.terminate()
        self._forget(conn)

    def take_oldest_idle(self) -> TenantConnection | None:
        if not self.idle:
            return None
        conn, _ = self.idle.pop(0)
        return conn

    def expired_idle(self, cutoff: float) -> list[TenantConnection]:
        old = [c for c, used in self.idle if used < cutoff]
        self.idle = [(c, used) for c, used in self.idle if used >= cutoff]
        return old

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        await asyncio.gather(*(self._close(c) for c, _ in idle), return_exceptions=True)


class PoolRegistry:
    def __init__(self, keys: RouterKeys | str, *, tenant_max_connections: int = 5, acquire_timeout: float = 5.0,
                 connect_timeout: float = 5.0, pool_idle_seconds: float = 60.0,
                 connection_idle_seconds: float = 30.0, shared_pool_max_connections: int = 20) -> None:
        """`keys`: the router's key material, or the deployment's secret key to derive it from."""
        self._keys = keys if isinstance(keys, RouterKeys) else RouterKeys.from_secret_key(keys)
        self.binding_key = self._keys.binding_key  # tickets for shared logins (contracts/guard.py)
        self.tenant_max_connections = tenant_max_connections
        self.shared_pool_max_connections = shared_pool_max_connections
        self._tenant_slots: dict[str, asyncio.Semaphore] = {}
        self.acquire_timeout = acquire_timeout
        self.connect_timeout = connect_timeout
        self.pool_idle_seconds = pool_idle_seconds
        self.connection_idle_seconds = connection_idle_seconds
        self._pools: dict[PoolKey, TenantPool] = {}
        self._budgets: dict[tuple[str, int], ServerBudget] = {}
        self._background: set[asyncio.Task] = set()
        self.connects = 0
        self.reclaims = 0
        # optional hook: called with (key, seconds) after every borrow, served or refused, with the
        # time it took to get a connection (idle hand-off, new connection or waiting for a slot)
        self.on_wait: Callable[[PoolKey, float], None] | None = None

    def budget(self, host: str, port: int, limit: int) -> ServerBudget:
        budget = self._budgets.get((host, port))
        if budget is None:
            budget = self._budgets[(host, port)] = ServerBudget(limit)
        budget.limit = limit  # the catalog may change a server's capacity
        return budget

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def reclaim_idle(self, asking: TenantPool) -> bool:
        """Close an idle connection of another pool of the same server: from the pool with the
        most idle connections first (its surplus), least recently used among equals, so that as
        many tenants as possible keep one warm connection."""
        candidates = [p for p in self._pools.values()
                      if p is not asking and p.budget is asking.budget and p.idle]
        if not candidates:
            return False
        victim = max(candidates, key=lambda p: (len(p.idle), -p.idle[0][1]))
        conn = victim.take_oldest_idle()
        if conn is None:
            return False
        self.reclaims += 1
        self._spawn(victim._close(conn))
        return True

    def _pool(self, key: PoolKey, server_budget: int) -> TenantPool:
        pool = self._pools.get(key)
        if pool is None:
            budget = self.budget(key.host, key.port, server_budget)
            pool = self._pools[key] = TenantPool(key, self._keys.role_password(key.role), budget, self)
            self._close_superseded(key)
        return pool

    async def borrow(self, key: PoolKey, server_budget: int, tenant: str | None = None) -> TenantConnection:
        """A connection of the key's pool, to hand back with `give_back()` (or use `connection()`).
        In a pool that serves many tenants, `tenant` may hold at most `tenant_max_connections`."""
        slots = self._tenant_slot(tenant) if key.shared and tenant is not None else None
        if slots is not None:
            if slots.locked():  # only a tenant at its cap waits (wait_for costs a task per call)
                try:
                    await asyncio.wait_for(slots.acquire(), self.acquire_timeout)
                except asyncio.TimeoutError:
                    raise PoolExhausted("this tenant's connections are all in use; try again shortly") from None
            else:
                await slots.acquire()  # free: returns at once, without suspending
        pool = self._pool(key, server_budget)
        pool.borrowers += 1
        started = pool.last_used = time.monotonic()
        try:
            conn = await pool.acquire(started + self.acquire_timeout)
        except BaseException:
            pool.borrowers -= 1
            if slots is not None:
                slots.release()
            raise
        finally:
            if self.on_wait is not None:
                self.on_wait(key, time.monotonic() - started)
        conn.borrowed_from = (pool, slots)
        return conn

    async def give_back(self, conn: TenantConnection) -> None:
        """Back to its pool, clean (see connection.py), or closed; cancelled half-way, the release
        terminates the connection instead."""
        pool, slots = conn.borrowed_from
        conn.borrowed_from = None
        try:
            await pool.release(conn)
        finally:
            pool.borrowers -= 1
            if slots is not None:
                slots.release()

    @contextlib.asynccontextmanager
    async def connection(self, key: PoolKey, server_budget: int,
                         tenant: str | None = None) -> AsyncIterator[TenantConnection]:
        """`borrow()` and `give_back()` as a context manager."""
        conn = await self.borrow(key, server_budget, tenant)
        try:
            yield conn
        finally:
            await self.give_back(conn)

    def _tenant_slot(self, tenant: str) -> asyncio.Semaphore:
        slots = self._tenant_slots.get(tenant)
        if slots is None:
            slots = self._tenant_slots[tenant] = asyncio.Semaphore(self.tenant_max_connections)
        return slots

    def _close_superseded(self, key: PoolKey) -> None:
        for other in list(self._pools):
            if (other.host, other.port, other.database) == (key.host, key.port, key.database) \
                    and other.version < key.version:
                self._drop(other)

    def _drop(self, key: PoolKey) -> None:
        pool = self._pools.pop(key, None)
        if pool is not None:
            self._spawn(pool.close())

    async def sweep_idle(self) -> None:
        """Close connections idle for `connection_idle_seconds`, and pools unused for `pool_idle_seconds`."""
        now = time.monotonic()
        for key, pool in list(self._pools.items()):
            for conn in pool.expired_idle(now - self.connection_idle_seconds):
                self._spawn(pool._close(conn))
            if pool.borrowers == 0 and pool.last_used < now - self.pool_idle_seconds:
                self._drop(key)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(max(min(self.pool_idle_seconds, self.connection_idle_seconds) / 2, 0.05))
            await self.sweep_idle()

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "pools": len(self._pools),
            "connects": self.connects,
            "reclaims": self.reclaims,
            "servers": {
                f"{host}:{port}": {"open": b.open, "limit": b.limit, "peak": b.peak, "waits": b.waits}
                for (host, port), b in self._budgets.items()
            },
        }

    def __len__(self) -> int:
        return len(self._pools)
