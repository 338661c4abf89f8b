"""The control plane's observability: request ids on every answer and log line, /metrics by route
(never by tenant) and operations by state."""

from __future__ import annotations

import logging
import re

import click
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from control_plane.cli.common import configure_process_logging
from tests.conftest import create_active_tenant
from tests.logs import json_log_lines

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


async def test_request_ids_are_echoed_generated_and_logged(api):
    with json_log_lines() as lines:
        r = await api.get("/v1/tenants", headers={"X-Request-ID": "cp-42"})
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "cp-42"
        unauthorized = await api.get("/v1/tenants", headers={"Authorization": "Bearer nope"})
        assert unauthorized.status_code == 401 and HEX_ID.match(unauthorized.headers["X-Request-ID"])
        hostile = await api.get("/health/live", headers=[("X-Request-ID", b"evil\xff value")])
        assert HEX_ID.match(hostile.headers["X-Request-ID"])
        missing = await api.get("/v1/no-such-route")
        assert missing.status_code == 404 and HEX_ID.match(missing.headers["X-Request-ID"])
        logged = lines()
    access = [line for line in logged if line.get("logger") == "tenantplane.access"]
    ok = next(line for line in access if line["request_id"] == "cp-42")
    assert ok["status"] == 200 and ok["path"] == "/v1/tenants" and ok["method"] == "GET"
    refused = next(line for line in access if line["request_id"] == unauthorized.headers["X-Request-ID"])
    assert refused["status"] == 401


async def test_a_log_line_inside_a_request_carries_its_id(api, monkeypatch):
    service = api.app.state.tenants
    original = service.list

    async def listing(*args, **kwargs):
        logging.getLogger("tenantplane.test").warning("listing tenants")
        return await original(*args, **kwargs)

    monkeypatch.setattr(service, "list", listing)
    with json_log_lines() as lines:
        r = await api.get("/v1/tenants", headers={"X-Request-ID": "cp-inside"})
        logging.getLogger("tenantplane.test").warning("outside any request")
        logged = {line["event"]: line for line in lines()}
    assert r.status_code == 200
    assert logged["listing tenants"]["request_id"] == "cp-inside"
    assert "request_id" not in logged["outside any request"]


async def test_metrics_by_route_and_operations_by_state(api):
    tenant = await create_active_tenant(api)
    assert (await api.get(f"/v1/tenants/{tenant['slug']}")).status_code == 200
    assert (await api.get("/v1/tenants/no-such-tenant-zz")).status_code == 404
    r = await api.get("/metrics", headers={"Authorization": ""})  # no admin credential needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)

    def value(name: str, **labels: str) -> float:
        return sum(v for n, tags, v in found if n == name and all(tags.get(k) == w for k, w in labels.items()))

    assert value("tenantplane_api_requests_total", method="POST", route="/v1/tenants", status="202") >= 1
    by_key = "/v1/tenants/{key}"  # the route's template
    assert value("tenantplane_api_requests_total", route=by_key, status="200") >= 1
    assert value("tenantplane_api_requests_total", route=by_key, status="404") >= 1
    assert value("tenantplane_api_request_seconds_count", method="GET", route=by_key) >= 2
    assert tenant["slug"] not in r.text and tenant["id"] not in r.text  # templates, never ids
    assert all("tenant" not in labels for _, labels, _ in found)
    assert value("tenantplane_api_catalog_up") == 1
    assert value("tenantplane_api_operations", state="succeeded") >= 1
    odd = await api.get("/metrics", headers={"Accept": "application/openmetrics-text; version=x"})
    assert odd.status_code == 200 and odd.headers["content-type"].startswith("text/plain")
    assert {tags["state"] for n, tags, _ in found if n == "tenantplane_api_operations"} >= {
        "queued", "running", "succeeded", "failed"}


def test_cli_processes_log_through_structlog(monkeypatch):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        monkeypatch.setenv("LOG_LEVEL", "warning")
        monkeypatch.setenv("LOG_FORMAT", "json")
        assert configure_process_logging() == "warning"  # uvicorn's level
        assert root.level == logging.WARNING
        assert any(isinstance(h.formatter, structlog.stdlib.ProcessorFormatter) for h in root.handlers)
        monkeypatch.setenv("LOG_LEVEL", "LOUD")
        with pytest.raises(click.ClickException):
            configure_process_logging()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
