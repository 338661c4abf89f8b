"""The demo tenant application: projects, one list per tenant, routed by tenant_router."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec
from litestar import Litestar, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from msgspec import Meta

from contracts.placement import Placement
from tenant_router.config import RouterConfig
from tenant_router.errors import RouterError
from tenant_router.gates import requires_feature, requires_role
from tenant_router.plugin import TenantRouterPlugin
from tenant_router.problems import EXCEPTION_HANDLERS, require_json_body


class NewProject(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+(?!\n)$")]


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


class ProjectNotFound(RouterError):  # rendered as a problem by the router's handler
    status, code, title = 404, "project_not_found", "Project not found"


class AnalyticsExport(msgspec.Struct):
    tenant: str
    projects: int


@get("/api/analytics/export", guards=[requires_feature("analytics_export")])
async def export_analytics(db: NamedDependency[asyncpg.Connection],
                           tenant: NamedDependency[Placement]) -> AnalyticsExport:
    return AnalyticsExport(tenant=tenant.slug, projects=await db.fetchval("SELECT count(*) FROM projects"))


@delete("/api/projects/{project_id:int}", guards=[requires_role("owner", "admin")])
async def delete_project(project_id: Annotated[int, Parameter(ge=1, le=2**63 - 1)],
                         db: NamedDependency[asyncpg.Connection]) -> None:
    if await db.fetchval("DELETE FROM projects WHERE id = $1 RETURNING id", project_id) is None:
        raise ProjectNotFound(f"no project {project_id}")


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


def create_app(config: RouterConfig) -> Litestar:
    return Litestar(
        route_handlers=[list_projects, create_project, export_analytics, delete_project, live],
        plugins=[TenantRouterPlugin(config)],
        exception_handlers=dict(EXCEPTION_HANDLERS),  # type: ignore[arg-type]
        before_request=require_json_body,
        request_max_body_size=64 * 1024,
        logging_config=None,  # logging is configured by the process (observability.configure_logging)
    )
