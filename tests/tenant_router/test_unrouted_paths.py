"""Which paths skip tenant resolution: the application's own endpoints, matched by whole path
segments, as the application configures them. Any other path is a tenant route: it is resolved
and gated, whatever it starts with."""

from __future__ import annotations

import msgspec
import pytest
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.testing import AsyncTestClient

from contracts.placement import Placement
from tenant_router.config import RouterConfig
from tenant_router.middleware import unrouted_matcher
from tenant_router.plugin import TenantRouterPlugin
from tests.conftest import Stack, create_active_tenant

DEFAULTS = RouterConfig(catalog_dsn="postgresql://x", secret_key="k" * 32).unrouted_paths


@pytest.mark.parametrize("path", ["/health", "/health/", "/health/live", "/schema", "/schema/openapi.json",
                                  "/metrics", "/-/router", "/-/router/stats"])
def test_the_applications_own_endpoints_are_unrouted(path: str):
    assert unrouted_matcher(DEFAULTS).match(path)


@pytest.mark.parametrize("path", ["/healthcare", "/health-check", "/schemas/x", "/schemata", "/metrics-export",
                                  "/metricsx/y", "/-/routers", "/-/router-stats", "/api/health", "/", ""])
def test_application_routes_that_merely_start_alike_are_routed(path: str):
    assert not unrouted_matcher(DEFAULTS).match(path)


def test_the_application_chooses_its_unrouted_paths():
    config = RouterConfig.from_env({"CATALOG_DATABASE_URL": "postgresql://x", "SECRET_KEY": "k" * 32,
                                    "ROUTER_UNROUTED_PATHS": " /status , /-/router "})
    assert config.unrouted_paths == ("/status", "/-/router")
    assert unrouted_matcher(config.unrouted_paths).match("/status/ready")
    assert not unrouted_matcher(config.unrouted_paths).match("/health/live")
    none = RouterConfig.from_env({"CATALOG_DATABASE_URL": "postgresql://x", "SECRET_KEY": "k" * 32,
                                  "ROUTER_UNROUTED_PATHS": ""})
    assert none.unrouted_paths == () and not unrouted_matcher(()).match("/health")
    for bad in ("health", "/health/", "//x"):
        with pytest.raises((ValueError, msgspec.ValidationError)):
            RouterConfig(catalog_dsn="postgresql://x", secret_key="k" * 32, unrouted_paths=(bad,))


@get(["/healthcare", "/schemas/{name:str}", "/metrics-export", "/health/live"], sync_to_thread=False)
def whose(tenant: NamedDependency[Placement]) -> dict[str, str]:
    return {"tenant": tenant.slug}


@get(["/plain", "/status"], sync_to_thread=False)
def plain() -> dict[str, str]:
    return {"ok": "yes"}


def app_for(stack: Stack, **overrides) -> Litestar:
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key, apex="localhost",
                          jwt_secret=stack.settings.tenant_jwt_secret, **overrides)
    return Litestar(route_handlers=[whose, plain], plugins=[TenantRouterPlugin(config)])


@pytest.mark.parametrize("path", ["/healthcare", "/schemas/x", "/metrics-export"])
async def test_a_route_that_only_looks_unrouted_needs_a_tenant(api, stack: Stack, path: str):
    tenant = await create_active_tenant(api)
    async with AsyncTestClient(app_for(stack)) as client:
        r = await client.get(path, headers={"Host": "localhost"})
        assert r.status_code == 404 and r.json()["code"] == "tenant_not_found", r.text
        r = await client.get(path, headers={"Host": "nobody-here.localhost"})
        assert r.status_code == 404, r.text
        r = await client.get(path, headers={"Host": f"{tenant['slug']}.localhost"})
        assert r.status_code == 200 and r.json() == {"tenant": tenant["slug"]}, r.text


async def test_configured_unrouted_paths_replace_the_defaults(stack: Stack):
    async with AsyncTestClient(app_for(stack, unrouted_paths=("/status",))) as client:
        r = await client.get("/status", headers={"Host": "localhost"})
        assert r.status_code == 200 and r.json() == {"ok": "yes"}, r.text
        r = await client.get("/health/live", headers={"Host": "localhost"})
        assert r.status_code == 404 and r.json()["code"] == "tenant_not_found", r.text
        r = await client.get("/plain", headers={"Host": "localhost"})
        assert r.status_code == 404, r.text
