"""The router's observability: request ids, log lines with tenant and request, /metrics, and the
service-only /-/router/stats."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import structlog
from litestar import Litestar, get
from litestar.di import NamedDependency
from prometheus_client.parser import text_string_to_metric_families

from tenant_router.config import RouterConfig
from tenant_router.plugin import TenantRouterPlugin
from tests.conftest import Stack, create_active_tenant
from tests.logs import json_log_lines

SERVICE_TOKEN = "svc-" + uuid.uuid4().hex
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@get("/api/probe")
async def probe(db: NamedDependency[asyncpg.Connection]) -> dict[str, int]:
    logging.getLogger("tenantplane.test").warning("stdlib line %s", "inside")
    structlog.get_logger("tenantplane.test").info("structlog line", answer=42)
    return {"one": await db.fetchval("SELECT 1")}


def router_config(stack: Stack, **extra) -> RouterConfig:
    return RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                        redis_url=stack.settings.redis_url, apex="localhost",
                        service_token_sha256=frozenset({hashlib.sha256(SERVICE_TOKEN.encode()).hexdigest()}),
                        **extra)


async def client_for(config: RouterConfig) -> AsyncIterator[httpx.AsyncClient]:
    from litestar.testing import AsyncTestClient

    app = Litestar(route_handlers=[probe], plugins=[TenantRouterPlugin(config)], logging_config=None)
    async with AsyncTestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
async def probe_app(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(router_config(stack)):
        yield client


@pytest.fixture(scope="module")
async def tenant(api) -> dict:
    return await create_active_tenant(api)


def host(tenant: dict) -> dict[str, str]:
    return {"Host": f"{tenant['slug']}.localhost"}


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float | None:
    found = [v for n, tags, v in samples(text) if n == name and all(tags.get(k) == w for k, w in labels.items())]
    return sum(found) if found else None


async def test_log_lines_carry_the_request_id_and_the_tenant(probe_app, tenant):
    with json_log_lines() as lines:
        r = await probe_app.get("/api/probe", headers={**host(tenant), "X-Request-ID": "req-abc.123_X"})
        assert r.status_code == 200, r.text
        refused = await probe_app.get("/api/probe", headers={"Host": "no-such-tenant-zz.localhost"})
        assert refused.status_code == 404
        logging.getLogger("tenantplane.test").warning("after the request")
        logged = lines()

    by_event = {line["event"]: line for line in logged}
    for event in ("stdlib line inside", "structlog line"):
        line = by_event[event]
        assert line["request_id"] == "req-abc.123_X", line
        assert line["tenant_id"] == tenant["id"] and line["tenant_slug"] == tenant["slug"], line
        assert line["logger"] == "tenantplane.test" and "timestamp" in line and "level" in line
    assert by_event["structlog line"]["answer"] == 42

    access = [line for line in logged if line["event"] == "request" and line.get("logger") == "tenantplane.access"]
    ok = next(line for line in access if line["status"] == 200)
    assert ok["request_id"] == "req-abc.123_X" and ok["tenant_id"] == tenant["id"]
    assert ok["method"] == "GET" and ok["path"] == "/api/probe" and ok["duration_ms"] >= 0
    # a refusal is rendered outside the middleware; its line still names the request
    not_found = next(line for line in access if line["status"] == 404)
    assert not_found["request_id"] == refused.headers["X-Request-ID"] and "tenant_id" not in not_found

    after = by_event["after the request"]
    assert "request_id" not in after and "tenant_id" not in after, "the context must be reset"


@pytest.mark.parametrize("sent", ["a b", "x" * 65, "<script>", "abc\t", "", "id/with/slash", "ä"])
async def test_hostile_request_ids_are_replaced(probe_app, tenant, sent):
    r = await probe_app.get("/api/probe", headers=[("Host", f"{tenant['slug']}.localhost"),
                                                   ("X-Request-ID", sent.encode())])
    assert r.status_code == 200
    assert HEX_ID.match(r.headers["X-Request-ID"]) and r.headers["X-Request-ID"] != sent


async def test_request_ids_are_echoed_or_generated_on_every_answer(probe_app, tenant):
    safe = "A" * 64
    r = await probe_app.get("/api/probe", headers={**host(tenant), "X-Request-ID": safe})
    assert r.headers["X-Request-ID"] == safe
    ids = set()
    for path, headers in [("/api/probe", host(tenant)), ("/api/probe", {"Host": "nobody-zz.localhost"}),
                          ("/metrics", {}), ("/-/router/stats", {}), ("/no/such/route", {})]:
        r = await probe_app.get(path, headers=headers)
        assert HEX_ID.match(r.headers.get("X-Request-ID", "")), (path, r.status_code, r.headers)
        ids.add(r.headers["X-Request-ID"])
    assert len(ids) == 5


async def test_metrics_count_requests_and_show_connections_by_server(probe_app, tenant, stack: Stack):
    assert (await probe_app.get("/api/probe", headers=host(tenant))).status_code == 200
    assert (await probe_app.get("/api/probe", headers={"Host": "nobody-zz.localhost"})).status_code == 404
    r = await probe_app.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    assert value(text, "tenantplane_router_requests_total", method="GET", status="200", tier="dedicated") >= 1
    assert value(text, "tenantplane_router_requests_total", status="404", tier="none") >= 1
    assert value(text, "tenantplane_router_request_seconds_count", method="GET", tier="dedicated") >= 1
    assert value(text, "tenantplane_router_refused_total", code="tenant_not_found") >= 1
    servers = {tags["server"] for n, tags, _ in samples(text) if n == "tenantplane_router_open_connections"}
    server = next(s for s in servers if s.endswith(f":{stack.pg.port}"))
    assert value(text, "tenantplane_router_open_connections", server=server) >= 1  # kept idle for reuse
    assert value(text, "tenantplane_router_connection_budget", server=server) == 200  # capacity_connections
    assert value(text, "tenantplane_router_pool_wait_seconds_count", server=server) >= 1
    assert value(text, "tenantplane_router_placement_cache_misses_total") >= 1
    assert value(text, "tenantplane_router_placement_cache_hits_total", layer="local") >= 1
    # cardinality: no tenant label unless the router is configured for it
    assert all("tenant" not in labels for _, labels, _ in samples(text))
    assert tenant["id"] not in text and tenant["slug"] not in text


async def test_the_tenant_label_is_opt_in(stack: Stack, tenant, probe_app):
    async for client in client_for(router_config(stack, metrics_tenant_label=True)):
        assert (await client.get("/api/probe", headers=host(tenant))).status_code == 200
        text = (await client.get("/metrics")).text
        assert value(text, "tenantplane_router_requests_total", status="200", tenant=tenant["id"]) == 1
        assert value(text, "tenantplane_router_request_seconds_count", tenant=tenant["id"]) == 1
    # each router has its own registry: the other app's counts are its own
    other = (await probe_app.get("/metrics")).text
    assert all("tenant" not in labels for _, labels, _ in samples(other))


async def test_router_stats_need_the_service_token(probe_app, tenant):
    await probe_app.get("/api/probe", headers=host(tenant))
    for headers in ({}, {"X-Service-Token": "guess"}, {"X-Service-Token": SERVICE_TOKEN + "x"}):
        r = await probe_app.get("/-/router/stats", headers=headers)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "unauthorized"
    # excluded from tenant resolution: a tenant host changes nothing
    r = await probe_app.get("/-/router/stats", headers={**host(tenant), "X-Service-Token": SERVICE_TOKEN})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pools"]["pools"] >= 1 and body["pools"]["servers"]
    assert set(body["directory"]) >= {"entries", "hits", "misses", "redis_hits", "hit_ratio"}


@pytest.mark.parametrize("accept, content_type", [
    ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
    ("application/openmetrics-text; version=bogus", "text/plain"),  # the client library raises on it
    (";;,,", "text/plain"),
])
async def test_metrics_negotiate_the_format_and_survive_odd_accept_headers(probe_app, accept, content_type):
    r = await probe_app.get("/metrics", headers={"Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].startswith(content_type)
    assert "tenantplane_router_requests" in r.text
