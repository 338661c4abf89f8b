"""The demo tenant application: projects, one list per tenant, routed by tenant_router."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta

from tenant_router.config import RouterConfig
from tenant_router.plugin import TenantRouterPlugin


class NewProject(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Project(msgspec.Struct):
    id: int
    name: str
    created_at: dt.datetime


@get("/api/projects")
async def list_projects(db: NamedDependency[asyncpg.Connection]) -> list[Project]:
    rows = await db.fetch("SELECT id, name, created_at FROM projects ORDER BY id")
    return [Project(**dict(r)) for r in rows]


@post("/api/projects", status_code=201)
async def create_project(data: JSONBody[NewProject], db: NamedDependency[asyncpg.Connection]) -> Project:
    row = await db.fetchrow("INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at", data.name)
    return Project(**dict(row))


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


def create_app(config: RouterConfig) -> Litestar:
    from control_plane.api.problems import EXCEPTION_HANDLERS

    return Litestar(
        route_handlers=[list_projects, create_project, live],
        plugins=[TenantRouterPlugin(config)],
        exception_handlers=dict(EXCEPTION_HANDLERS),  # type: ignore[arg-type]
        request_max_body_size=64 * 1024,
    )
