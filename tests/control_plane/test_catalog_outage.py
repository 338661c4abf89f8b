"""The catalog cannot be reached: the admin API answers 503 `catalog_unavailable` with Retry-After,
and neither it nor the router's lookup of a tenant it has not cached waits longer than the catalog
timeouts, whether the catalog refuses connections, never answers them, or freezes mid-session."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from control_plane.embedded import EmbeddedPostgres
from control_plane.settings import Settings
from tests.conftest import SECRET_KEY, extra_postgres, fresh_catalog


@contextmanager
def black_hole() -> Iterator[int]:
    """A port whose connections the kernel completes and nobody ever answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        yield s.getsockname()[1]


@contextmanager
def frozen(server: EmbeddedPostgres) -> Iterator[None]:
    """Every process of the server stopped: open sessions and new connections go unanswered."""
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    pids = [postmaster, *_children(postmaster)]  # each backend leads a process group of its own
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _settings(dsn: str) -> Settings:
    return Settings.from_env({}, catalog_database_url=dsn, secret_key=SECRET_KEY,
                             catalog_connect_timeout_seconds=1, catalog_statement_timeout_seconds=1)


async def _admin_get(settings: Settings, path: str = "/v1/tenants") -> tuple[int, dict, dict, float]:
    async with AsyncTestClient(create_app(settings)) as client:
        started = time.monotonic()
        r = await asyncio.wait_for(client.get(path, headers={"Authorization": "Bearer tpa_" + "k" * 40}), 20)
        return r.status_code, r.json(), dict(r.headers), time.monotonic() - started


def _assert_unavailable(status: int, body: dict, headers: dict) -> None:
    assert status == 503 and body["code"] == "catalog_unavailable", (status, body)
    assert int(headers["retry-after"]) > 0


async def test_a_refused_catalog_is_503_catalog_unavailable():
    status, body, headers, _ = await _admin_get(_settings("postgresql://u:p@127.0.0.1:1/catalog"))
    _assert_unavailable(status, body, headers)


async def test_a_black_holed_catalog_is_answered_within_the_connect_timeout():
    with black_hole() as port:
        status, body, headers, took = await _admin_get(_settings(f"postgresql://u:p@127.0.0.1:{port}/catalog"))
    _assert_unavailable(status, body, headers)
    assert took < 6, took


async def test_a_frozen_catalog_bounds_admin_requests_and_router_lookups(tmp_root: Path):
    from demo_app.app import create_app as create_tenant_app
    from tenant_router.config import RouterConfig

    with extra_postgres(tmp_root, "pg-frozen-catalog") as server:
        dsn = await fresh_catalog(server, "catalog_frozen")
        config = RouterConfig(catalog_dsn=dsn, secret_key=SECRET_KEY, apex="localhost",
                              catalog_connect_timeout_seconds=1, catalog_statement_timeout_seconds=1)
        settings = msgspec.structs.replace(_settings(dsn))
        async with AsyncTestClient(create_tenant_app(config)) as app, AsyncTestClient(create_app(settings)) as api:
            assert (await app.get("/api/projects", headers={"Host": "nobody1.localhost"})).status_code == 404
            with frozen(server):
                started = time.monotonic()
                r = await asyncio.wait_for(app.get("/api/projects", headers={"Host": "nobody2.localhost"}), 30)
                assert r.status_code == 503 and r.json()["code"] == "catalog_unavailable", r.text
                assert "retry-after" in r.headers and time.monotonic() - started < 8
                started = time.monotonic()
                r = await asyncio.wait_for(api.get("/v1/tenants", headers={"Authorization": "Bearer tpa_" + "k" * 40}), 30)
                _assert_unavailable(r.status_code, r.json(), dict(r.headers))
                assert time.monotonic() - started < 8
