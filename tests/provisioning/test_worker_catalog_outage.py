"""A worker survives its catalog going away: it backs off, reconnects and resumes, and serves the
operations queued after the catalog came back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import admin_client, extra_postgres, make_stack, stop_process, unique_slug, wait_for


async def test_a_worker_outlives_a_catalog_restart(tmp_root: Path, redis_server):
    with extra_postgres(tmp_root, "pg-catalog-outage") as server:
        stack = await make_stack(server, redis_server.url, "catalog_outage")
        worker = stack.start_worker(SPARE_DATABASES="0", CATALOG_CONNECT_TIMEOUT_SECONDS="1")
        try:
            async with admin_client(stack) as api:
                r = await api.post("/v1/tenants", json={"slug": unique_slug("outage"), "name": "Before"})
                assert r.status_code == 202, r.text
                await wait_for(api, r.json()["tenant"]["id"], "active")
            server.stop()
            deadline = time.monotonic() + 4  # several rounds of the worker's loop without a catalog
            while time.monotonic() < deadline:
                assert worker.poll() is None, "the worker exited when the catalog went away"
                await asyncio.sleep(0.2)
            server.start()
            async with admin_client(stack) as api:
                r = await api.post("/v1/tenants", json={"slug": unique_slug("outage"), "name": "After"})
                assert r.status_code == 202, r.text
                await wait_for(api, r.json()["tenant"]["id"], "active", timeout=30)
            assert worker.poll() is None
        finally:
            stop_process(worker)
