"""place_tenant: the least loaded active server with room, the one a request names, the same one
on a rerun, and a clear error when no server has room. Catalog only (a catalog of its own, server
rows nobody connects to)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from migrations.tree import DEMO_TREE
from provisioning.context import StepContext
from provisioning.sealing import SecretBox
from provisioning.steps.catalog import NoCapacity, place_tenant
from tests.conftest import SECRET_KEY, catalog_pool

CATALOG = "catalog_placement"


@pytest.fixture
async def catalog(pg) -> AsyncIterator[asyncpg.Pool]:
    async with catalog_pool(pg, CATALOG) as pool:
        yield pool


async def add_server(catalog: asyncpg.Pool, name: str, capacity: int, status: str = "active") -> uuid.UUID:
    return await catalog.fetchval(
        "INSERT INTO database_servers (id, name, host, port, admin_user, admin_database, capacity_databases, "
        "capacity_connections, status) VALUES (gen_random_uuid(), $1, '127.0.0.1', 1, 'x', 'postgres', $2, 10, $3) "
        "RETURNING id", name, capacity, status)


async def new_context(catalog: asyncpg.Pool, **params: str) -> StepContext:
    tenant_id = uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', 'dedicated', "
                          "'provisioning')", tenant_id, f"t{tenant_id.hex[:12]}")

    async def announce(_: uuid.UUID) -> None:
        return None

    return StepContext(operation_id=uuid.uuid4(), tenant_id=tenant_id, params=params, catalog=catalog,
                       secret_key=SECRET_KEY, box=SecretBox(SECRET_KEY), announce=announce, tenant_tree=DEMO_TREE)


async def placed_server(catalog: asyncpg.Pool, ctx: StepContext) -> uuid.UUID:
    return await catalog.fetchval("SELECT server_id FROM placements WHERE tenant_id = $1", ctx.tenant_id)


async def test_tenants_go_to_the_least_loaded_active_server_with_room(catalog):
    small = await add_server(catalog, "a-small", 2)
    big = await add_server(catalog, "b-big", 10)
    await add_server(catalog, "c-cordoned", 100, status="cordoned")
    chosen = []
    for _ in range(8):
        ctx = await new_context(catalog)
        await place_tenant(ctx)
        server = await ctx.server()  # handed over by the step, no lookup needed
        assert server.id == await placed_server(catalog, ctx)
        chosen.append(server.name)
    # by share of capacity used, ties by name: a-small (0/2), then b-big until it is as full (5/10),
    # then a-small again, now full, so b-big after that
    assert chosen == ["a-small"] + ["b-big"] * 5 + ["a-small", "b-big"]
    assert await catalog.fetchval("SELECT count(*) FROM placements WHERE server_id = $1", small) == 2
    assert await catalog.fetchval("SELECT count(*) FROM placements WHERE server_id = $1", big) == 6


async def test_a_named_server_is_used_and_a_rerun_keeps_the_placement(catalog):
    await add_server(catalog, "a-free", 100)
    cordoned = await add_server(catalog, "b-cordoned", 100, status="cordoned")
    ctx = await new_context(catalog, server_id=str(cordoned))
    await place_tenant(ctx)
    assert await placed_server(catalog, ctx) == cordoned
    again = await new_context(catalog)  # the same tenant, as a rerun after a crash sees it
    again.tenant_id = ctx.tenant_id
    await place_tenant(again)
    assert (await again.server()).id == cordoned
    assert await catalog.fetchval("SELECT count(*) FROM placements WHERE tenant_id = $1", ctx.tenant_id) == 1


async def test_no_server_with_room_is_a_clear_error(catalog):
    await add_server(catalog, "a-full", 0)
    await add_server(catalog, "b-draining", 100, status="draining")
    ctx = await new_context(catalog)
    with pytest.raises(NoCapacity, match="no active database server has room"):
        await place_tenant(ctx)
    assert await placed_server(catalog, ctx) is None
