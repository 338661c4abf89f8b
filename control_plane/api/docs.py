"""The admin API's OpenAPI document and docs page: a bearer security scheme (so Swagger UI can send
the admin token), our RFC 9457 problem responses instead of Litestar's default error body, and
Swagger UI served from the `swagger-ui-bundle-v2` wheel (Swagger UI 5, which reads OpenAPI 3.1)
rather than a CDN, so `/schema` renders offline."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import swagger_ui_bundle  # the Swagger UI distribution, as a wheel (swagger-ui-bundle-v2)
from litestar import Litestar, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

from contracts.problems import PROBLEM_JSON

SCHEMA_PATH = "/schema"
ASSETS = f"{SCHEMA_PATH}/assets"
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_PARAM_TYPE = re.compile(r"\{(\w+):\w+\}")  # /v1/tenants/{key:str} is /v1/tenants/{key} in the document


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem detail; `code` is stable, more members may follow (e.g. `errors`)."""
    type: str
    title: str
    status: int
    detail: str
    code: str


_DESCRIPTIONS = {
    400: "malformed_json: the body is not valid JSON",
    401: "unauthorized: missing or invalid admin token",
    403: "insufficient_scope: the admin key lacks the scope this needs (`needed` lists those that would do)",
    404: "not found (`tenant_not_found`, `operation_not_found`, ...)",
    409: "conflict (`slug_taken`, `operation_in_progress`, `nothing_to_move`, ...)",
    415: "unsupported_media_type: send the body as application/json",
    422: "validation_failed (with `errors`), or another refusal of the input (`invalid_cursor`, "
         "`downgrade_not_supported`, ...)",
    429: "too_many_failed_attempts: too many failed authentications from this address, or from all (Retry-After)",
    503: "catalog_unavailable: the catalog database cannot be reached now (Retry-After)",
}


def _spec(status: int) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, media_type=PROBLEM_JSON, description=_DESCRIPTIONS[status],
                        generate_examples=False)


def problem_statuses(handler: HTTPRouteHandler, path: str) -> set[int]:
    """The problems an admin route can answer: every one 401/403/429/503 and 422 (query, path or
    body validation); a body means 400 and 415 too; a path parameter 404; a write 409; and those a
    handler names in `opt["problems"]`."""
    statuses = {401, 403, 422, 429, 503, *handler.opt.get("problems", ())}
    methods = set(handler.http_methods)
    if "{" in path:
        statuses.add(404)
    if methods & _WRITES:
        statuses.add(409)
    if "data" in handler.parsed_fn_signature.parameters:
        statuses |= {400, 415}
    return statuses


def document_problems(app: Litestar, is_admin: Any) -> None:
    """Give each admin route its problem responses, then build the document once and drop the 400
    that Litestar adds with its own error body where a route cannot answer 400 (its validation
    errors are our 422)."""
    real: dict[tuple[str, str], set[int]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler) and is_admin(handler):
                statuses = problem_statuses(handler, route.path)
                handler.responses = {**{s: _spec(s) for s in sorted(statuses | {400})}, **(handler.responses or {})}
                for method in handler.http_methods:
                    real[(_PARAM_TYPE.sub(r"{\1}", route.path), method.lower())] = statuses
    for path, item in (app.openapi_schema.paths or {}).items():
        for method, statuses in ((m, real.get((path, m))) for m in ("get", "post", "put", "patch", "delete")):
            operation = getattr(item, method, None)
            if operation is not None and statuses is not None and 400 not in statuses and operation.responses:
                operation.responses.pop("400", None)


def openapi_config(version: str) -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS}/swagger-ui-bundle.js", css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>", path=["/", "/swagger"])
    return OpenAPIConfig(
        title="tenantplane control plane", version=version, path=SCHEMA_PATH, render_plugins=[swagger],
        components=Components(security_schemes={"bearer": SecurityScheme(
            type="http", scheme="bearer", description="an admin key's token (POST /v1/admin-keys; the "
                                                      "bootstrap token is ADMIN_TOKEN)")}),
        security=[{"bearer": []}])


def assets_router() -> Router:
    """Swagger UI's files from the wheel, public like the schema itself."""
    return create_static_files_router(path=ASSETS, directories=[str(swagger_ui_bundle.swagger_ui_path)],
                                      include_in_schema=False, name="swagger-assets")
