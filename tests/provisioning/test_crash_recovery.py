"""SIGKILL the worker at every step boundary of create and delete; a restarted worker finishes the
operation, and the servers hold exactly what the catalog says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from provisioning import identifiers
from provisioning.pipelines import CREATE_DEDICATED, DELETE_DEDICATED
from tests.conftest import Stack, make_stack, stop_process, unique_slug, wait_for


@pytest.fixture(scope="module")
async def crash_stack(pg, redis_server) -> Stack:
    # its own catalog: no session worker competes for these operations
    return await make_stack(pg, redis_server.url, "catalog_crash")


@pytest.fixture(scope="module")
async def crash_api(crash_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    from litestar.testing import AsyncTestClient

    from control_plane.api.app import create_app

    async with AsyncTestClient(create_app(crash_stack.settings)) as client:
        client.headers["Authorization"] = f"Bearer {crash_stack.settings.admin_token}"
        yield client


async def wait_paused(proc: subprocess.Popen, step: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if line.startswith(f"PAUSED before {step} "):
            return
    raise AssertionError(f"worker never paused before {step}:\n{''.join(seen[-30:])}")


def sigkill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def server_objects(stack: Stack, tenant_id: str) -> tuple[int, int]:
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        dbs = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1",
                                   identifiers.tenant_database(tenant_id))
        roles = await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1",
                                     identifiers.tenant_role(tenant_id))
    finally:
        await admin.close()
    return dbs, roles


async def run_until_killed_then_finish(stack: Stack, api: httpx.AsyncClient, tenant_id: str, step: str,
                                       final_status: str) -> None:
    paused = stack.start_worker(capture=True, TENANTPLANE_TEST_PAUSE_BEFORE_STEP=step)
    try:
        await wait_paused(paused, step)
    finally:
        sigkill(paused)
    assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] != final_status
    worker = stack.start_worker()
    try:
        await wait_for(api, tenant_id, final_status)
    finally:
        stop_process(worker)


# before each step, after each step's effect but before it is recorded as done, before the finish
CREATE_BOUNDARIES = [*CREATE_DEDICATED.step_names, *(f"after:{s}" for s in CREATE_DEDICATED.step_names), "finish"]
DELETE_BOUNDARIES = [*DELETE_DEDICATED.step_names, *(f"after:{s}" for s in DELETE_DEDICATED.step_names), "finish"]


@pytest.mark.parametrize("step", CREATE_BOUNDARIES)
async def test_create_survives_sigkill_before(step: str, crash_stack: Stack, crash_api: httpx.AsyncClient):
    r = await crash_api.post("/v1/tenants", json={"slug": unique_slug("c"), "name": "Crash", "tier": "dedicated"})
    assert r.status_code == 202
    tenant_id, op_id = r.json()["tenant"]["id"], r.json()["operation_id"]

    await run_until_killed_then_finish(crash_stack, crash_api, tenant_id, step, "active")

    assert await server_objects(crash_stack, tenant_id) == (1, 1)
    op = (await crash_api.get(f"/v1/operations/{op_id}")).json()
    assert op["state"] == "succeeded"
    assert all(s["state"] == "succeeded" for s in op["steps"])


@pytest.mark.parametrize("step", DELETE_BOUNDARIES)
async def test_delete_survives_sigkill_before(step: str, crash_stack: Stack, crash_api: httpx.AsyncClient):
    r = await crash_api.post("/v1/tenants", json={"slug": unique_slug("d"), "name": "Crash", "tier": "dedicated"})
    tenant_id = r.json()["tenant"]["id"]
    worker = crash_stack.start_worker()
    try:
        await wait_for(crash_api, tenant_id, "active")
    finally:
        stop_process(worker)
    assert (await crash_api.delete(f"/v1/tenants/{tenant_id}")).status_code == 202

    await run_until_killed_then_finish(crash_stack, crash_api, tenant_id, step, "deleted")

    assert await server_objects(crash_stack, tenant_id) == (0, 0)
    catalog = await asyncpg.connect(crash_stack.catalog_dsn)
    try:
        assert not await catalog.fetchval("SELECT 1 FROM placements WHERE tenant_id = $1::uuid", tenant_id)
    finally:
        await catalog.close()


async def test_tenant_app_answers_503_while_provisioning(crash_stack: Stack, crash_api: httpx.AsyncClient):
    from litestar.testing import AsyncTestClient

    from demo_app.app import create_app
    from tenant_router.config import RouterConfig

    r = await crash_api.post("/v1/tenants", json={"slug": unique_slug("p"), "name": "Pending"})
    slug = r.json()["tenant"]["slug"]
    config = RouterConfig(catalog_dsn=crash_stack.catalog_dsn, secret_key=crash_stack.settings.secret_key)
    async with AsyncTestClient(create_app(config)) as app:  # no worker runs: it stays provisioning
        response = await app.get("/api/projects", headers={"Host": f"{slug}.localhost"})
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["code"] == "tenant_unavailable"
    # leave nothing queued for the next test's worker to trip over
    worker = crash_stack.start_worker()
    try:
        await wait_for(crash_api, r.json()["tenant"]["id"], "active")
    finally:
        stop_process(worker)
