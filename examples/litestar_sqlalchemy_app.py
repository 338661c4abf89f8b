"""Litestar + SQLAlchemy models behind the router: handlers take an AsyncSession bound to the
request's tenant transaction (the router's connection underneath, committed with the request).

    CATALOG_DATABASE_URL=... SECRET_KEY=... uvicorn --factory examples.litestar_sqlalchemy_app:from_env --port 8004
    curl -s http://127.0.0.1:8004/api/projects -H 'Host: acme.localhost'
"""

from __future__ import annotations

import datetime as dt

import msgspec
from litestar import Litestar, get, post
from litestar.di import Provide
from litestar.params import JSONBody
from sqlalchemy import BigInteger, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tenant_router.config import RouterConfig
from tenant_router.plugin import TenantRouterPlugin
from tenant_router.problems import EXCEPTION_HANDLERS
from tenant_sqlalchemy.session import provide_session


class Base(DeclarativeBase):
    pass


class Project(Base):
    """The demo's tenant table (migrations/tenant/versions): the same model on every tier; on the
    shared tier `tenant_id` is filled by its server default and checked by row-level security."""

    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class NewProject(msgspec.Struct):
    name: str
    fail: bool = False


@get("/api/projects")
async def list_projects(session: AsyncSession) -> list[dict]:
    rows = (await session.scalars(select(Project).order_by(Project.id))).all()
    return [{"id": p.id, "name": p.name} for p in rows]


@post("/api/projects", status_code=201)
async def create_project(data: JSONBody[NewProject], session: AsyncSession) -> dict:
    project = Project(name=data.name)
    session.add(project)
    await session.flush()
    if data.fail:  # the request's transaction rolls back, and the session's work with it
        raise RuntimeError("asked to fail")
    await session.commit()
    return {"id": project.id, "name": project.name}


def create_app(config: RouterConfig) -> Litestar:
    return Litestar(route_handlers=[list_projects, create_project], plugins=[TenantRouterPlugin(config)],
                    dependencies={"session": Provide(provide_session)}, exception_handlers=EXCEPTION_HANDLERS)


def from_env() -> Litestar:
    return create_app(RouterConfig.from_env())
