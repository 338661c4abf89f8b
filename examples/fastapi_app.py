"""FastAPI behind the router: the demo's `projects` table, one list per tenant, the tenant's
transaction as a dependency (committed when the handler returns, rolled back when it raises).

    CATALOG_DATABASE_URL=... SECRET_KEY=... uvicorn --factory examples.fastapi_app:from_env --port 8003
    curl -s http://127.0.0.1:8003/api/projects -H 'Host: acme.localhost'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from contracts.placement import Placement
from tenant_router.asgi import TenantMiddleware, require_feature, tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant
from tenant_router.errors import RouterError


class ProjectNotFound(RouterError):  # answered as a problem by the middleware
    status, code, title = 404, "project_not_found", "Project not found"


async def tenant_db() -> AsyncIterator[asyncpg.Connection]:
    async with tenant_transaction() as conn:
        yield conn


# scope="function": the transaction ends (commits or rolls back) before the response is sent, so a
# failed COMMIT is the request's answer rather than a log line after a 2xx
Db = Annotated[asyncpg.Connection, Depends(tenant_db, scope="function")]
Tenant = Annotated[Placement, Depends(current_tenant)]


class NewProject(BaseModel):
    name: str
    fail: bool = False


def create_app(config: RouterConfig) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenantMiddleware, config=config)

    @app.get("/api/projects")
    async def list_projects(db: Db) -> list[dict]:
        return [dict(r) for r in await db.fetch("SELECT id, name FROM projects ORDER BY id")]

    @app.post("/api/projects", status_code=201)
    async def create_project(project: NewProject, db: Db) -> dict:
        row = await db.fetchrow("INSERT INTO projects (name) VALUES ($1) RETURNING id, name", project.name)
        if project.fail:  # the dependency's transaction rolls back
            raise RuntimeError("asked to fail")
        return dict(row)

    @app.get("/api/projects/{project_id}")
    async def get_project(project_id: int, db: Db) -> dict:
        row = await db.fetchrow("SELECT id, name FROM projects WHERE id = $1", project_id)
        if row is None:
            raise ProjectNotFound("no such project")
        return dict(row)

    @app.get("/api/analytics/export", dependencies=[Depends(require_feature("analytics_export"))])
    async def export(db: Db, tenant: Tenant) -> dict:
        return {"tenant": tenant.slug, "projects": await db.fetchval("SELECT count(*) FROM projects")}

    return app


def from_env() -> FastAPI:
    return create_app(RouterConfig.from_env())
