"""tenant_transaction(): the only way to get a database connection for a tenant.

It borrows from the pool of the tenant's placement and opens a transaction; the tenant's context
lives only inside that transaction. For the dedicated tier the login role itself is the binding
(the role can reach no other database); other tiers bind with SET LOCAL here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from tenant_router.context import current_tenant
from tenant_router.contracts import Placement, Tier
from tenant_router.errors import TenantUnavailable
from tenant_router.pools import PoolRegistry


@asynccontextmanager
async def tenant_transaction(pools: PoolRegistry, placement: Placement | None = None
                             ) -> AsyncIterator[asyncpg.Connection]:
    placement = placement or current_tenant()
    if placement.tier is not Tier.dedicated or placement.host is None:
        raise TenantUnavailable(f"tenant {placement.slug} has no usable placement")
    try:
        pool = await pools.get(placement.pool_key)
        conn_cm = pool.acquire()
        conn = await conn_cm.__aenter__()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise TenantUnavailable(f"the tenant's database is not reachable ({type(exc).__name__})") from None
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn_cm.__aexit__(None, None, None)
