"""An AsyncSession on the router's tenant transaction, on all three tiers: the ORM sees only its
tenant's rows, its work commits and rolls back with the request (one transaction), and on the
shared tier row-level security still refuses another tenant's rows through the ORM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, literal, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from examples.litestar_sqlalchemy_app import Project, create_app
from tenant_router.config import RouterConfig
from tenant_router.jobs import find_tenant, started_router, tenant_context
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
                    await session.commit()  # kept for the routed COMMIT: not yet durable
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


async def test_json_columns_of_every_kind_decode_through_the_orm(stack, pairs):
    a, _ = pairs["shared"]
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                assert await session.scalar(select(literal({"k": [1, None]}, JSONB))) == {"k": [1, None]}
                assert await session.scalar(select(literal(None, JSONB))) is None
                row = (await session.execute(text("""SELECT 1 AS n, '{"a": 2}'::json AS j, NULL::jsonb AS nothing,
                    ARRAY['{"b": 3}'::jsonb, NULL] AS arr, ARRAY[ARRAY['4'::json]] AS grid"""))).one()
                assert tuple(row) == (1, {"a": 2}, None, [{"b": 3}, None], [[4]])
                result = await session.stream(text("""SELECT '{"c": 5}'::jsonb FROM generate_series(1, 3)"""))
                assert [r async for r in result.scalars()] == [{"c": 5}] * 3  # a server-side cursor


async def test_a_raw_borrower_after_a_session_gets_json_as_asyncpg_gives_it(stack, pairs):
    """The session's json decoding stays with the session: the raw `db` calls after it, in the
    same transaction and in the next borrow of that pooled connection, get asyncpg's text."""
    a, _ = pairs["dedicated"]
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                assert await session.scalar(text("""SELECT '{"a": 1}'::jsonb""")) == {"a": 1}
            assert await db.fetchval("""SELECT '{"a": 1}'::jsonb""") == '{"a": 1}'
        async with tenant_context(a["slug"], router=router) as db:
            assert await db.fetchval("""SELECT '[2]'::json""") == "[2]"
            assert await db.fetchval("""SELECT '{"a": 1}'::jsonb""") == '{"a": 1}'
            async with session_on(db) as session:  # and the next session decodes again
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


# --- what a session keeps on the pooled connection, and what it no longer sends --------------------

PROJECTS_SELECT = select(Project).order_by(Project.id)


def one_connection(stack: Stack) -> RouterConfig:
    """A router whose tenant pools hold one connection each: every session reuses it."""
    return RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key, apex="localhost",
                        tenant_max_connections=1)


async def prepared_projects_selects(db) -> list[tuple[str, object]]:
    """The prepared statements of this backend that are the ORM's SELECT of projects (the dedicated
    tier's role may read pg_prepared_statements: its own session only)."""
    rows = await db.fetch("SELECT name, prepare_time FROM pg_prepared_statements "
                          "WHERE statement LIKE 'SELECT projects.id, projects.name, projects.created_at%' ORDER BY name")
    return [(r["name"], r["prepare_time"]) for r in rows]


@pytest.fixture
async def own_dedicated(api) -> dict:
    """A dedicated tenant of the test's own: its schema may be altered without touching others'."""
    return await create_tenant(api, "dedicated")


async def test_sessions_on_one_pooled_connection_share_its_prepared_statements(stack, pairs):
    a, _ = pairs["dedicated"]
    seen = []
    async with started_router(one_connection(stack)) as router:
        for _ in range(3):
            async with tenant_context(a["slug"], router=router) as db:
                async with session_on(db) as session:
                    (await session.scalars(PROJECTS_SELECT)).all()
                seen.append(await prepared_projects_selects(db))
    assert len(seen[0]) == 1, seen
    assert seen[1] == seen[0] and seen[2] == seen[0]  # the same statement, prepared once


async def test_a_session_that_only_reads_takes_no_savepoint_and_commit_sends_no_release(stack, pairs):
    a, _ = pairs["schema"]
    sent: list[str] = []
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            db.add_query_logger(lambda record: sent.append(record.query))
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT)).all()
                await session.scalar(select(func.count()).select_from(Project))
            assert not [q for q in sent if "SAVEPOINT" in q], sent
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT)).all()
                session.add(Project(name="written after a read"))
                await session.commit()
            assert [q for q in sent if "SAVEPOINT" in q] == [q for q in sent if q.startswith("SAVEPOINT")], sent
            assert len([q for q in sent if "SAVEPOINT" in q]) == 1, sent  # taken before the INSERT, never released
            async with session_on(db) as session:  # still one transaction: the row is there
                assert await session.scalar(select(func.count()).select_from(Project).where(
                    Project.name == "written after a read")) >= 1


async def test_a_locking_or_text_read_takes_the_savepoint_and_rollback_undoes_it(stack, pairs):
    a, _ = pairs["shared"]
    sent: list[str] = []
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            db.add_query_logger(lambda record: sent.append(record.query))
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT.with_for_update())).all()
                assert len([q for q in sent if q.startswith("SAVEPOINT")]) == 1
                await session.execute(text("INSERT INTO projects (name) VALUES ('rolled back')"))
                await session.rollback()
            assert await db.fetchval("SELECT count(*) FROM projects WHERE name = 'rolled back'") == 0


async def test_a_statement_stale_after_the_dialect_saw_a_schema_change_is_prepared_again(stack, own_dedicated):
    """SQLAlchemy moves its dialect's invalidation time on when it runs DDL (or a statement failed
    as stale): every pooled connection's statements prepared before are prepared again."""
    from tenant_sqlalchemy.session import tenant_engine

    async with started_router(one_connection(stack)) as router:
        placement = await find_tenant(router, own_dedicated["slug"])
        async with tenant_context(own_dedicated["slug"], router=router) as db:
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT)).all()
            before = await prepared_projects_selects(db)
        admin = await asyncpg.connect(stack.pg.dsn(placement.database))
        try:  # the result type changes: the statement prepared before would now fail
            await admin.execute("ALTER TABLE projects ALTER COLUMN name TYPE text")
        finally:
            await admin.close()
        tenant_engine().sync_engine.dialect._invalidate_schema_cache()  # what SQLAlchemy's DDL execution calls
        async with tenant_context(own_dedicated["slug"], router=router) as db:
            async with session_on(db) as session:
                session.add(Project(name="after the ALTER"))
                await session.flush()
                assert "after the ALTER" in [p.name for p in (await session.scalars(PROJECTS_SELECT)).all()]
            after = await prepared_projects_selects(db)
    assert len(before) == 1 and len(after) == 1 and after != before


async def test_a_statement_stale_after_a_tenant_migration_is_prepared_again(stack, own_dedicated):
    """A migration runs in a worker: this process's dialect never sees its DDL, but the placement's
    revision moves on, and a pooled connection's statements belong to the revision they were
    prepared under."""
    async with started_router(one_connection(stack)) as router:
        placement = await find_tenant(router, own_dedicated["slug"])
        async with tenant_context(own_dedicated["slug"], router=router) as db:
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT)).all()
        admin = await asyncpg.connect(stack.pg.dsn(placement.database))
        catalog = await asyncpg.connect(stack.catalog_dsn)
        try:
            await admin.execute("ALTER TABLE projects ALTER COLUMN name TYPE text")
            await catalog.execute("UPDATE placements SET tenant_revision = 't9999' WHERE tenant_id = $1",
                                  placement.tenant_id)
            async with tenant_context(own_dedicated["slug"], router=router) as db:
                async with session_on(db) as session:
                    assert isinstance((await session.scalars(PROJECTS_SELECT)).all(), list)
        finally:
            await catalog.execute("UPDATE placements SET tenant_revision = $2 WHERE tenant_id = $1",
                                  placement.tenant_id, placement.tenant_revision)
            await admin.close()
            await catalog.close()


async def test_a_schema_changed_by_hand_fails_one_statement_then_is_prepared_again(stack, own_dedicated):
    """No revision and no DDL of ours: PostgreSQL refuses the stale statement once ("cached plan
    must not change result type"); the dialect records it, and the next session prepares afresh."""
    async with started_router(one_connection(stack)) as router:
        placement = await find_tenant(router, own_dedicated["slug"])
        async with tenant_context(own_dedicated["slug"], router=router) as db:
            async with session_on(db) as session:
                (await session.scalars(PROJECTS_SELECT)).all()
        admin = await asyncpg.connect(stack.pg.dsn(placement.database))
        try:
            await admin.execute("ALTER TABLE projects ALTER COLUMN name TYPE text")
        finally:
            await admin.close()
        with pytest.raises(DBAPIError, match="cached statement plan is invalid"):
            async with tenant_context(own_dedicated["slug"], router=router) as db:
                async with session_on(db) as session:
                    (await session.scalars(PROJECTS_SELECT)).all()
        async with tenant_context(own_dedicated["slug"], router=router) as db:
            async with session_on(db) as session:
                assert isinstance((await session.scalars(PROJECTS_SELECT)).all(), list)


async def test_repeated_commits_in_one_transaction_leave_one_savepoint_unreleased(stack, pairs):
    a, _ = pairs["dedicated"]
    sent: list[str] = []
    tag = f"batch-{uuid.uuid4().hex[:8]}"
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            db.add_query_logger(lambda record: sent.append(record.query))
            async with session_on(db) as session:
                for i in range(3):
                    session.add(Project(name=f"{tag}-{i}"))
                    await session.commit()
            async with session_on(db) as session:
                session.add(Project(name=f"{tag}-3"))
                await session.commit()
    assert [q.split()[0] for q in sent if "SAVEPOINT" in q] == [
        "SAVEPOINT", "SAVEPOINT", "RELEASE", "SAVEPOINT", "RELEASE", "SAVEPOINT", "RELEASE"]
    async with started_router(router_config(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            assert await db.fetchval("SELECT count(*) FROM projects WHERE name LIKE $1", f"{tag}%") == 4


async def test_a_sessions_driver_connection_kept_past_its_transaction_reaches_no_next_borrower(stack, pairs):
    """The session prepares on the pooled connection itself (for its statement cache), so it checks
    the borrow: a driver connection kept past its transaction must not reach the next borrower,
    maybe another tenant."""
    from tenant_router.connection import ConnectionReleased

    a, b = pairs["shared"]
    async with started_router(one_connection(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                kept = (await (await session.connection()).get_raw_connection()).driver_connection
                await kept.prepare("SELECT 1")
        async with tenant_context(b["slug"], router=router):
            with pytest.raises(ConnectionReleased):
                await kept.prepare("SELECT 1")
