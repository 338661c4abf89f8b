"""An AsyncSession on the router's tenant transaction, on all three tiers: the ORM sees only its
tenant's rows, its work commits and rolls back with the request (one transaction), and on the
shared tier row-level security still refuses another tenant's rows through the ORM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from examples.litestar_sqlalchemy_app import Project, create_app
from tenant_router.config import RouterConfig
from tenant_router.jobs import started_router, tenant_context
from tenant_sqlalchemy.session import session_on
from tests.conftest import Stack, unique_slug, wait_for

TIERS = ("dedicated", "schema", "shared")


def router_config(stack: Stack) -> RouterConfig:
    return RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                        redis_url=stack.settings.redis_url, apex="localhost")


async def create_tenant(api, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug(), "name": "ORM", "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


@pytest.fixture(scope="module")
async def pairs(api) -> dict[str, tuple[dict, dict]]:
    return {tier: (await create_tenant(api, tier), await create_tenant(api, tier)) for tier in TIERS}


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(router_config(stack))) as c:
        yield c


def host(tenant: dict) -> dict[str, str]:
    return {"Host": f"{tenant['slug']}.localhost"}


@pytest.mark.parametrize("tier", TIERS)
async def test_the_orm_sees_only_its_tenants_rows(client, pairs, tier):
    a, b = pairs[tier]
    name = f"orm-{uuid.uuid4().hex[:8]}"
    r = await client.post("/api/projects", json={"name": name}, headers=host(a))
    assert r.status_code == 201, r.text
    r = await client.get("/api/projects", headers=host(a))
    assert r.status_code == 200, r.text
    assert name in [p["name"] for p in (await client.get("/api/projects", headers=host(a))).json()]
    assert name not in [p["name"] for p in (await client.get("/api/projects", headers=host(b))).json()]


@pytest.mark.parametrize("tier", TIERS)
async def test_the_sessions_work_rolls_back_with_the_request(client, pairs, tier):
    a, _ = pairs[tier]
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    r = await client.post("/api/projects", json={"name": name, "fail": True}, headers=host(a))
    assert r.status_code == 500
    assert name not in [p["name"] for p in (await client.get("/api/projects", headers=host(a))).json()]


@pytest.mark.parametrize("tier", TIERS)
async def test_one_transaction_session_commit_is_a_savepoint(stack, pairs, tier):
    a, _ = pairs[tier]
    async with started_router(router_config(stack)) as router:
        with pytest.raises(ZeroDivisionError):
            async with tenant_context(a["slug"], router=router) as db:
                async with session_on(db) as session:
                    session.add(Project(name="kept until the transaction fails"))
                    await session.commit()  # RELEASE SAVEPOINT: not yet durable
                    # the session and the raw connection are the same transaction
                    assert await db.fetchval("SELECT count(*) FROM projects WHERE name = $1",
                                             "kept until the transaction fails") == 1
                1 / 0  # noqa: B018
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                assert await session.scalar(select(func.count()).select_from(Project).where(
                    Project.name == "kept until the transaction fails")) == 0
                session.add(Project(name="undone"))
                await session.flush()
                await session.rollback()  # ROLLBACK TO SAVEPOINT: the transaction goes on
                assert await session.scalar(select(func.count()).select_from(Project).where(Project.name == "undone")) == 0


async def test_shared_tier_rls_refuses_another_tenants_rows_through_the_orm(stack, pairs):
    a, b = pairs["shared"]
    async with started_router(router_config(stack)) as router:
        with pytest.raises(DBAPIError, match="row-level security"):
            async with tenant_context(a["slug"], router=router) as db:
                async with session_on(db) as session:
                    await session.execute(text("INSERT INTO projects (tenant_id, name) VALUES (:other, 'smuggled')"),
                                          {"other": uuid.UUID(b["id"])})
        async with tenant_context(b["slug"], router=router) as db:
            async with session_on(db) as session:
                assert await session.scalar(select(func.count()).select_from(Project).where(Project.name == "smuggled")) == 0


async def test_json_decodes_through_the_orm_in_every_session_on_one_connection(stack, pairs):
    a, _ = pairs["dedicated"]
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key, apex="localhost",
                          tenant_max_connections=1)  # one pooled connection: every session reuses it
    async with started_router(config) as router:
        for _ in range(3):
            async with tenant_context(a["slug"], router=router) as db:
                async with session_on(db) as session:
                    assert await session.scalar(text("""SELECT '{"a": 1}'::jsonb""")) == {"a": 1}
                    assert await session.scalar(text("""SELECT '[2]'::json""")) == [2]


async def test_fastapi_handlers_get_a_session_on_the_tenant_transaction(stack, pairs):
    from asgi_lifespan import LifespanManager
    from fastapi import Depends, FastAPI
    from httpx import ASGITransport, AsyncClient

    from tenant_router.asgi import TenantMiddleware
    from tenant_sqlalchemy.session import tenant_session

    app = FastAPI()
    app.add_middleware(TenantMiddleware, config=router_config(stack))

    @app.post("/api/projects/{name}")
    async def add(name: str, session=Depends(tenant_session, scope="function")) -> dict:  # noqa: B008
        session.add(Project(name=name))
        await session.commit()
        return {"count": await session.scalar(select(func.count()).select_from(Project).where(Project.name == name))}

    a, b = pairs["shared"]
    name = f"fastapi-{uuid.uuid4().hex[:8]}"
    async with LifespanManager(app) as manager:
        async with AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as client:
            assert (await client.post(f"/api/projects/{name}", headers=host(a))).json() == {"count": 1}
            assert (await client.post(f"/api/projects/{name}", headers=host(b))).json() == {"count": 1}  # not a's


def test_the_lent_dialect_keeps_sqlalchemys_compiled_statement_cache():
    """Without the flag SQLAlchemy compiles every statement on every execution (the ORM figure of
    `python -m bench orm_throughput` went from 0.43 to 0.53 with it)."""
    from tenant_sqlalchemy.session import LentDialect, tenant_engine

    assert LentDialect.__dict__.get("supports_statement_cache") is True
    assert tenant_engine().sync_engine._compiled_cache is not None
