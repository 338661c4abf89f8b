"""advanced-alchemy's SQLAlchemyAsyncRepository on our session, on all three tiers: its create,
read, update and delete work inside the router's transaction, and each tenant's repository sees
only its own rows (on the shared tier, row-level security still decides)."""

from __future__ import annotations

import uuid

import pytest
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository

from examples.litestar_sqlalchemy_app import Project
from tenant_router.jobs import started_router, tenant_context
from tenant_sqlalchemy.session import session_on
from tests.tenant_sqlalchemy.test_session import TIERS, create_tenant, router_config


class ProjectRepository(SQLAlchemyAsyncRepository[Project]):
    model_type = Project


@pytest.fixture(scope="module")
async def pairs(api) -> dict[str, tuple[dict, dict]]:
    return {tier: (await create_tenant(api, tier), await create_tenant(api, tier)) for tier in TIERS}


@pytest.mark.parametrize("tier", TIERS)
async def test_a_repository_reads_and_writes_its_tenants_rows_only(stack, pairs, tier):
    a, b = pairs[tier]
    tag = f"aa-{uuid.uuid4().hex[:8]}"
    async with started_router(router_config(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                repo = ProjectRepository(session=session)
                first = await repo.add(Project(name=f"{tag}-1"))
                await repo.add_many([Project(name=f"{tag}-2"), Project(name=f"{tag}-3")])
                first.name = f"{tag}-1-renamed"
                await repo.update(first)
                await repo.delete((await repo.get_one(name=f"{tag}-3")).id)
                await session.commit()
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                repo = ProjectRepository(session=session)
                rows, count = await repo.list_and_count(Project.name.startswith(tag), order_by=[("name", False)])
                assert [p.name for p in rows] == [f"{tag}-1-renamed", f"{tag}-2"] and count == 2
                assert (await repo.get(first.id)).name == f"{tag}-1-renamed"
        async with tenant_context(b["slug"], router=router) as db:
            async with session_on(db) as session:
                repo = ProjectRepository(session=session)
                assert await repo.count(Project.name.startswith(tag)) == 0
                assert not await repo.exists(name=f"{tag}-2")
                try:  # ids are per database (dedicated) or per schema: b may have a row of its own with a's id
                    found = await repo.get(first.id)
                except NotFoundError:
                    found = None
                assert found is None or not found.name.startswith(tag)
                if tier == "shared":  # one table, one sequence: a's row is there, and out of b's reach
                    with pytest.raises(NotFoundError):
                        await repo.delete(first.id)
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                assert await ProjectRepository(session=session).count(Project.name.startswith(tag)) == 2


@pytest.mark.parametrize("tier", TIERS)
async def test_a_repositorys_rollback_undoes_its_writes_and_the_transaction_goes_on(stack, pairs, tier):
    a, _ = pairs[tier]
    tag = f"aa-rb-{uuid.uuid4().hex[:8]}"
    async with started_router(router_config(stack)) as router:
        async with tenant_context(a["slug"], router=router) as db:
            async with session_on(db) as session:
                repo = ProjectRepository(session=session)
                assert await repo.count(Project.name.startswith(tag)) == 0  # a read: no savepoint yet
                await repo.add(Project(name=f"{tag}-undone"))
                await session.rollback()
                await repo.add(Project(name=f"{tag}-kept"))
                await session.commit()
            assert [r["name"] for r in await db.fetch("SELECT name FROM projects WHERE name LIKE $1", f"{tag}%")] \
                == [f"{tag}-kept"]
