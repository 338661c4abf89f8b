"""Starlette behind the router: the demo's `projects` table, one list per tenant.

    CATALOG_DATABASE_URL=... SECRET_KEY=... uvicorn --factory examples.starlette_app:from_env --port 8002
    curl -s http://127.0.0.1:8002/api/projects -H 'Host: acme.localhost'
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tenant_router.asgi import TenantMiddleware, require_feature, tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.context import current_tenant
from tenant_router.errors import RouterError


class ProjectNotFound(RouterError):  # answered as a problem by the middleware
    status, code, title = 404, "project_not_found", "Project not found"

export_gate = require_feature("analytics_export")


async def list_projects(request: Request) -> JSONResponse:
    async with tenant_transaction() as db:
        rows = await db.fetch("SELECT id, name FROM projects ORDER BY id")
    return JSONResponse([dict(r) for r in rows])


async def create_project(request: Request) -> JSONResponse:
    body = await request.json()
    async with tenant_transaction() as db:
        row = await db.fetchrow("INSERT INTO projects (name) VALUES ($1) RETURNING id, name", str(body["name"]))
        if body.get("fail"):  # the transaction rolls back with the error
            raise RuntimeError("asked to fail")
    return JSONResponse(dict(row), status_code=201)


async def get_project(request: Request) -> JSONResponse:
    async with tenant_transaction() as db:
        row = await db.fetchrow("SELECT id, name FROM projects WHERE id = $1", request.path_params["project_id"])
    if row is None:
        raise ProjectNotFound("no such project")
    return JSONResponse(dict(row))


async def export(request: Request) -> JSONResponse:
    export_gate()
    async with tenant_transaction() as db:
        count = await db.fetchval("SELECT count(*) FROM projects")
    return JSONResponse({"tenant": current_tenant().slug, "projects": count})


def create_app(config: RouterConfig) -> Starlette:
    app = Starlette(routes=[Route("/api/projects", list_projects), Route("/api/projects", create_project, methods=["POST"]),
                            Route("/api/projects/{project_id:int}", get_project),
                            Route("/api/analytics/export", export)])
    app.add_middleware(TenantMiddleware, config=config)
    return app


def from_env() -> Starlette:
    return create_app(RouterConfig.from_env())
