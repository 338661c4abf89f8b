"""What a handler holds as `db` is a proxy that stops working when its transaction ends: a handler
that keeps it cannot reach the next borrower's transaction (another tenant's, on the schema and
shared pools), while everything a handler does inside its request works through it."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import get
from litestar.di import NamedDependency

from contracts.placement import Placement
from demo_app.app import create_app as create_demo_app
from tenant_router.binding import tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.directory import Directory
from tenant_router.pools import PoolRegistry
from tenant_router.proxy import ConnectionReleased
from tenant_router.resolution import TenantKey
from tests.conftest import Stack, unique_slug, wait_for

TIERS = ("dedicated", "schema", "shared")


async def make_tenant(api: httpx.AsyncClient, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("px"), "name": "Proxy", "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


@pytest.fixture(scope="module")
async def tenants(api) -> dict[str, list[dict]]:
    """Two tenants per tier; on the schema and shared tiers both live in the same database."""
    made = await asyncio.gather(*(make_tenant(api, tier) for tier in TIERS for _ in range(2)))
    return {tier: [t for t in made if t["tier"] == tier] for tier in TIERS}


@pytest.fixture(scope="module")
async def placements(stack: Stack, tenants) -> dict[str, list[Placement]]:
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        directory = Directory(catalog, ttl=30, negative_ttl=1)
        found = {tier: [await directory.get_placement(TenantKey("id", t["id"])) for t in pair]
                 for tier, pair in tenants.items()}
    finally:
        await catalog.close()
    for tier in ("schema", "shared"):
        a, b = found[tier]
        assert a.pool_key == b.pool_key, "the two tenants of a tier share one pool"
    return found


@pytest.fixture
async def registry(stack: Stack) -> AsyncIterator[PoolRegistry]:
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1, shared_pool_max_connections=1)
    try:
        yield registry
    finally:
        await registry.close()


def names_of(rows: list[Any]) -> set[str]:
    return {r["name"] for r in rows}


# --- a kept connection, through the real router ---------------------------------------------------

kept: list[asyncpg.Connection] = []


@get("/probe/keep")
async def keep(db: NamedDependency[asyncpg.Connection]) -> dict[str, Any]:
    kept.append(db)
    return {"pid": await db.fetchval("SELECT pg_backend_pid()")}


@get("/probe/reuse")
async def reuse(db: NamedDependency[asyncpg.Connection]) -> dict[str, Any]:
    """Runs inside another request's transaction, with the connection a previous request kept."""
    error = rows = None
    try:
        rows = [r["name"] for r in await kept[-1].fetch("SELECT name FROM projects")]
    except Exception as exc:
        error = exc
    return {"pid": await db.fetchval("SELECT pg_backend_pid()"),
            "released": isinstance(error, ConnectionReleased), "kept_rows": rows,
            "own_rows": [r["name"] for r in await db.fetch("SELECT name FROM projects")]}


@get("/probe/reuse-uncaught")
async def reuse_uncaught(db: NamedDependency[asyncpg.Connection]) -> None:
    await db.execute("INSERT INTO projects (name) VALUES ('never committed')")
    await kept[-1].execute("SELECT 1")


@contextlib.asynccontextmanager
async def routed_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The demo app with one connection per pool, so the next request gets the kept backend; in
    the test's own task (its lifespan must end where it began)."""
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          redis_url=stack.settings.redis_url, apex="localhost",
                          tenant_max_connections=1, shared_pool_max_connections=1)
    app = create_demo_app(config)
    for handler in (keep, reuse, reuse_uncaught):
        app.register(handler)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


@pytest.mark.parametrize("tier", ["schema", "shared"])
async def test_a_kept_connection_cannot_reach_the_next_tenants_transaction(stack: Stack, tenants, tier: str):
    a, b = tenants[tier]
    async with routed_client(stack) as client:
        host_a, host_b = ({"Host": f"{t['slug']}.localhost"} for t in (a, b))
        marker_a, marker_b = f"proxy:{a['slug']}", f"proxy:{b['slug']}"
        assert (await client.post("/api/projects", json={"name": marker_a}, headers=host_a)).status_code == 201
        assert (await client.post("/api/projects", json={"name": marker_b}, headers=host_b)).status_code == 201

        r = await client.get("/probe/keep", headers=host_a)
        assert r.status_code == 200, r.text
        pid = r.json()["pid"]
        r = await client.get("/probe/reuse", headers=host_b)
        assert r.status_code == 200, r.text
        body = r.json()
        # the kept handle's backend is the one serving B's transaction now: only the proxy stands between
        assert body["pid"] == pid
        assert body["released"] is True and body["kept_rows"] is None
        assert marker_b in body["own_rows"] and marker_a not in body["own_rows"]

        # after its request, outside any request
        with pytest.raises(ConnectionReleased):
            await kept[-1].fetch("SELECT name FROM projects")
        # used in another request and not caught: that request fails as a handler bug, and rolls back
        r = await client.get("/probe/reuse-uncaught", headers=host_b)
        assert r.status_code == 500 and r.json()["code"] == "internal_error", r.text
        r = await client.get("/api/projects", headers=host_b)
        assert [p["name"] for p in r.json()] == [marker_b]


# --- the proxy inside its transaction, and after it -----------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
async def test_inside_its_transaction_the_proxy_works_as_the_connection(placements, registry, tier: str):
    placement = placements[tier][0]
    heard: list[Any] = []
    async with tenant_transaction(registry, placement) as db:
        assert isinstance(db, asyncpg.Connection) and db.is_in_transaction()
        await db.execute("INSERT INTO projects (name) VALUES ('px-kept')")
        await db.executemany("INSERT INTO projects (name) VALUES ($1)", [("px-many-1",), ("px-many-2",)])
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with db.transaction():  # a savepoint
                await db.execute("INSERT INTO projects (name) VALUES ('px-rolled-back')")
                await db.execute("SELECT 1 / 0")
        async with db.transaction():
            await db.execute("INSERT INTO projects (name) VALUES ('px-released')")
        statement = await db.prepare("SELECT name FROM projects WHERE name LIKE 'px-%' ORDER BY name")
        assert [r["name"] for r in await statement.fetch()] == ["px-kept", "px-many-1", "px-many-2", "px-released"]
        assert [r["name"] async for r in db.cursor("SELECT name FROM projects WHERE name = 'px-kept'")] == ["px-kept"]
        assert await db.fetchval("SELECT count(*) FROM projects WHERE name LIKE 'px-%'") == 4
        assert (await db.fetchrow("SELECT name FROM projects WHERE name = 'px-kept'"))["name"] == "px-kept"
        if tier == "dedicated":  # COPY FROM is refused on tables with row-level security (schema, shared)
            await db.copy_records_to_table("projects", records=[("px-copied",)], columns=["name"])
            await db.copy_to_table("projects", source=io.BytesIO(b"px-copied-text\n"), columns=["name"])
        out = io.BytesIO()
        await db.copy_from_query("SELECT name FROM projects WHERE name LIKE 'px-%' ORDER BY name", output=out)
        expected = {"px-kept", "px-many-1", "px-many-2", "px-released"}
        if tier == "dedicated":
            expected |= {"px-copied", "px-copied-text"}
        else:
            with pytest.raises(asyncpg.FeatureNotSupportedError):
                async with db.transaction():
                    await db.copy_records_to_table("projects", records=[("px-copied",)], columns=["name"])
        assert set(out.getvalue().decode().split()) == expected
        db.add_log_listener(lambda con, _message: heard.append(con))
        await db.execute("DO $$ BEGIN RAISE NOTICE 'px'; END $$")
        await db.execute("SELECT 1")  # the callback runs on the loop meanwhile
        savepoint = db.transaction()
        cursor_factory = db.cursor("SELECT 1")
        handed = db
        await db.execute("DELETE FROM projects WHERE name LIKE 'px-%'")  # leave the tier's tables as they were

    for use in (lambda: handed.fetch("SELECT 1"), lambda: handed.execute("SELECT 1"),
                lambda: handed.fetchval("SELECT 1"), lambda: handed.copy_from_query("SELECT 1", output=io.BytesIO()),
                lambda: statement.fetch(), lambda: savepoint.start(), lambda: cursor_factory.__aiter__().__anext__()):
        with pytest.raises(asyncpg.InterfaceError):
            await use()
    with pytest.raises(ConnectionReleased):
        handed.transaction()
    with pytest.raises(ConnectionReleased):
        handed.is_in_transaction()
    with pytest.raises(ConnectionReleased):
        handed.get_server_pid()
    assert "released" in repr(handed)
    assert heard and all(con is handed for con in heard)  # callbacks got the proxy, not the connection


async def test_each_borrow_gets_its_own_proxy_of_the_same_connection(placements, registry):
    placement = placements["shared"][0]
    async with tenant_transaction(registry, placement) as first:
        pid = first.get_server_pid()
    async with tenant_transaction(registry, placements["shared"][1]) as second:
        assert second is not first and second.get_server_pid() == pid
        with pytest.raises(ConnectionReleased):
            await first.fetchval("SELECT current_setting('app.tenant_id', true)")
        assert await second.fetchval("SELECT current_setting('app.tenant_id', true)") == str(placements["shared"][1].tenant_id)
