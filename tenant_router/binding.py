"""tenant_transaction(): the only way to get a database connection for a tenant.

It borrows from the pool of the tenant's placement, opens a transaction and yields a proxy of the
connection that stops working when the transaction ends (proxy.py); the tenant's context lives only
inside that transaction. For the dedicated tier the login role itself is the binding
(the role can reach no other database); the schema tier binds with SET LOCAL ROLE and SET LOCAL
search_path, and both it and the shared tier with a ticket only the router can make, which the
row-level policies check (contracts/guard.py).

The transaction is three round trips (connection.py): BEGIN with the binding, the handler's
statements, COMMIT with the session reset. A connection that turns out dead when the transaction
begins (its server restarted) is thrown away and the borrow is tried once more; a server that
cannot be reached answers 503 for its tenants only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from contracts.placement import Placement
from contracts.tiers import LAYOUTS, IncompletePlacement
from tenant_router.connection import ConnectionReleased, TenantConnection
from tenant_router.context import current_tenant
from tenant_router.errors import TenantUnavailable
from tenant_router.pools import PoolRegistry
from tenant_router.proxy import ConnectionProxy

CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError,
                     asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                     asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError,
                     asyncpg.InvalidPasswordError, asyncpg.TooManyConnectionsError)


def _unavailable(exc: BaseException) -> TenantUnavailable:
    return TenantUnavailable(f"the tenant's database is not reachable ({type(exc).__name__})")


def _binding(placement: Placement, key: bytes, conn: TenantConnection) -> str | None:
    """The statements that bind a transaction to its tenant, as its tier lays them out
    (contracts/tiers.py): sent in one message with the BEGIN. On shared logins the binding is a
    ticket for this backend, issued now (contracts/guard.py)."""
    try:
        return LAYOUTS[placement.tier].binding(placement, key, conn.get_server_pid(), time.time_ns() // 1_000_000)
    except IncompletePlacement as exc:
        raise TenantUnavailable(f"tenant {placement.slug} has {exc}") from None


async def _abandon(pools: PoolRegistry, conn: TenantConnection) -> None:
    """Roll the transaction back and give the connection back (its release resets it); one whose
    rollback fails or is interrupted is terminated instead."""
    try:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.rollback_routed()
    except BaseException:
        conn.terminate()
    await pools.give_back(conn)


@asynccontextmanager
async def tenant_transaction(pools: PoolRegistry, placement: Placement | None = None,
                             budget_fraction: float = 1.0) -> AsyncIterator[asyncpg.Connection]:
    placement = placement or current_tenant()
    if placement.host is None or placement.role is None:
        raise TenantUnavailable(f"tenant {placement.slug} has no usable placement")
    budget = max(1, int(placement.server_budget * budget_fraction))
    key, tenant = placement.pool_key, str(placement.tenant_id)
    for attempt in (1, 2):
        try:
            conn = await pools.borrow(key, budget, tenant)
        except CONNECTION_ERRORS as exc:
            raise _unavailable(exc) from None
        try:
            await conn.begin_bound(_binding(placement, pools.binding_key, conn))
            break
        except CONNECTION_ERRORS as exc:
            conn.terminate()
            await pools.give_back(conn)
            if attempt == 2:
                raise _unavailable(exc) from None
        except BaseException:  # e.g. the binding refused
            await _abandon(pools, conn)
            raise
    handed = ConnectionProxy(conn)
    try:
        yield handed
    except BaseException as exc:
        handed.detach()
        await _abandon(pools, conn)
        # a released connection the handler used is the handler's bug (500), not the server's (503)
        if isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, ConnectionReleased):
            raise _unavailable(exc) from None
        raise
    handed.detach()
    try:
        await conn.commit_and_reset()
    except CONNECTION_ERRORS as exc:
        conn.terminate()
        raise _unavailable(exc) from None
    finally:
        await pools.give_back(conn)
