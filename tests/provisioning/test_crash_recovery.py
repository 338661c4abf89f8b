"""SIGKILL the worker at every step boundary of create and delete; a restarted worker finishes the
operation, and the servers hold exactly what the catalog says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.channels import rate_limit_key_pattern
from provisioning.announcements import redis_client
from provisioning.pipelines import MOVE, pipeline_for
from tenant_router.ratelimit import TenantRateLimiter
from tests.conftest import (
    Stack,
    admin_client,
    extra_postgres,
    make_stack,
    stop_process,
    unique_slug,
    wait_for,
)


@pytest.fixture(scope="module")
def crash_pg(tmp_root):
    # a server of its own, so that the reconciler's view at the end is about these tenants only
    with extra_postgres(tmp_root, "pg-crash") as server:
        yield server


@pytest.fixture(scope="module")
async def crash_stack(crash_pg, redis_server) -> Stack:
    # its own catalog: no session worker competes for these operations
    return await make_stack(crash_pg, redis_server.url, "catalog_crash")


@pytest.fixture(scope="module")
async def crash_api(crash_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(crash_stack) as client:
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


async def kill_at_then_finish(stack: Stack, step: str, finished: Callable[[], Awaitable[object]],
                              **env: str) -> object:
    """A worker that pauses at `step` is SIGKILLed there; a fresh worker then runs until
    `finished()` returns something truthy (within 90 s), which is returned. `env`: both workers'."""
    paused = stack.start_worker(capture=True, TENANTPLANE_TEST_PAUSE_BEFORE_STEP=step, **env)
    try:
        await wait_paused(paused, step)
    finally:
        sigkill(paused)
    worker = stack.start_worker(**env)
    try:
        deadline = time.monotonic() + 90
        while not (outcome := await finished()):
            assert time.monotonic() < deadline, f"not finished after the crash at {step}"
            await asyncio.sleep(0.1)
        return outcome
    finally:
        stop_process(worker)


async def run_until_killed_then_finish(stack: Stack, api: httpx.AsyncClient, tenant_id: str, step: str,
                                       final_status: str) -> None:
    async def finished() -> bool:
        return (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == final_status

    assert not await finished()
    await kill_at_then_finish(stack, step, finished)


# before each step, after each step's effect but before it is recorded as done, before the finish
CREATE_DEDICATED = pipeline_for("create_tenant", "dedicated")
DELETE_DEDICATED = pipeline_for("delete_tenant", "dedicated")
MIGRATE_DEDICATED = pipeline_for("migrate_tenant", "dedicated")
CREATE_BOUNDARIES = [*CREATE_DEDICATED.step_names, *(f"after:{s}" for s in CREATE_DEDICATED.step_names), "finish"]
DELETE_BOUNDARIES = [*DELETE_DEDICATED.step_names, *(f"after:{s}" for s in DELETE_DEDICATED.step_names), "finish"]
MOVE_BOUNDARIES = [*MOVE.step_names, *(f"after:{s}" for s in MOVE.step_names)]
MIGRATE_BOUNDARIES = [*MIGRATE_DEDICATED.step_names, *(f"after:{s}" for s in MIGRATE_DEDICATED.step_names), "finish"]


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


async def test_create_survives_sigkill_right_after_claiming_a_spare(crash_stack: Stack, crash_api: httpx.AsyncClient):
    """The claim renames a spare and clears its mark in one transaction; a worker killed right after
    it leaves the tenant's database (the former spare), and the rerun asks it its revision."""
    from migrations import runner
    from provisioning.sealing import SecretBox
    from provisioning.servers import load_server
    from provisioning.template import upgrade_template
    from tests.provisioning.test_spares import wait_spares

    admin = await asyncpg.connect(crash_stack.pg.dsn())
    catalog = await asyncpg.connect(crash_stack.catalog_dsn)
    try:
        server = await load_server(catalog, await catalog.fetchval("SELECT id FROM database_servers"))
        await upgrade_template(server, SecretBox(crash_stack.settings.secret_key), crash_stack.settings.tenant_tree)
        worker = crash_stack.start_worker(SPARE_DATABASES="2")
        try:
            spares = await wait_spares(admin, 2)
        finally:
            stop_process(worker)
        oids = await admin.fetchval("SELECT array_agg(oid) FROM pg_database WHERE datname = ANY($1::text[])",
                                    list(spares))
        r = await crash_api.post("/v1/tenants", json={"slug": unique_slug("k"), "name": "Claim"})
        tenant_id, op_id = r.json()["tenant"]["id"], r.json()["operation_id"]

        await run_until_killed_then_finish(crash_stack, crash_api, tenant_id, "after:create_database", "active")

        assert await server_objects(crash_stack, tenant_id) == (1, 1)
        assert await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1",
                                    identifiers.tenant_database(tenant_id)) in oids
        assert (await crash_api.get(f"/v1/tenants/{tenant_id}")).json()["tenant_revision"] == runner.head(runner.DEMO_TREE)
        assert (await crash_api.get(f"/v1/operations/{op_id}")).json()["state"] == "succeeded"
    finally:
        await catalog.close()
        await admin.close()


@pytest.mark.parametrize("step", DELETE_BOUNDARIES)
async def test_delete_survives_sigkill_before(step: str, crash_stack: Stack, crash_api: httpx.AsyncClient):
    r = await crash_api.post("/v1/tenants", json={"slug": unique_slug("d"), "name": "Crash", "tier": "dedicated"})
    tenant_id = r.json()["tenant"]["id"]
    worker = crash_stack.start_worker()
    try:
        await wait_for(crash_api, tenant_id, "active")
    finally:
        stop_process(worker)
    # a window the rate limiter counted while the tenant was active (purge_rate_limits deletes it)
    assert (await TenantRateLimiter(crash_stack.settings.redis_url).hit(uuid.UUID(tenant_id), 60)) is not None
    assert (await crash_api.delete(f"/v1/tenants/{tenant_id}")).status_code == 202

    await run_until_killed_then_finish(crash_stack, crash_api, tenant_id, step, "deleted")

    assert await server_objects(crash_stack, tenant_id) == (0, 0)
    redis = redis_client(crash_stack.settings.redis_url)
    try:
        assert [k async for k in redis.scan_iter(match=rate_limit_key_pattern(tenant_id))] == []
    finally:
        await redis.aclose()
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


async def active_tenant(stack: Stack, api: httpx.AsyncClient, tier: str = "dedicated") -> str:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("m"), "name": "Crash", "tier": tier})
    tenant_id = r.json()["tenant"]["id"]
    worker = stack.start_worker()
    try:
        await wait_for(api, tenant_id, "active")
    finally:
        stop_process(worker)
    return tenant_id


async def run_op_through_crash(stack: Stack, api: httpx.AsyncClient, op_id: str, step: str) -> dict:
    async def finished() -> dict | None:
        op = (await api.get(f"/v1/operations/{op_id}")).json()
        return op if op["state"] in ("succeeded", "failed") else None

    return await kill_at_then_finish(stack, step, finished)  # type: ignore[return-value]


@pytest.mark.parametrize("step", MOVE_BOUNDARIES)
async def test_move_survives_sigkill_before(step: str, crash_stack: Stack, crash_api: httpx.AsyncClient):
    """dedicated → schema on the same server: exactly one copy afterwards, data intact."""
    tenant_id = await active_tenant(crash_stack, crash_api)
    admin = await asyncpg.connect(crash_stack.pg.dsn(identifiers.tenant_database(tenant_id)))
    try:
        await admin.execute("INSERT INTO projects (name) SELECT 'p' || g FROM generate_series(1, 50) g")
    finally:
        await admin.close()
    r = await crash_api.post(f"/v1/tenants/{tenant_id}/move", json={"tier": "schema"})
    op = await run_op_through_crash(crash_stack, crash_api, r.json()["operation_id"], step)
    assert op["state"] == "succeeded", op
    tenant = (await crash_api.get(f"/v1/tenants/{tenant_id}")).json()
    assert tenant["tier"] == "schema" and tenant["status"] == "active"
    assert await server_objects(crash_stack, tenant_id) == (0, 1)  # no database left; the role lives on
    schemas = await asyncpg.connect(crash_stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
    try:
        schema = identifiers.tenant_schema(tenant_id)
        assert await schemas.fetchval(f'SELECT count(*) FROM "{schema}".projects') == 50
    finally:
        await schemas.close()


@pytest.mark.parametrize("step", MIGRATE_BOUNDARIES)
async def test_migrate_survives_sigkill_before(step: str, crash_stack: Stack, crash_api: httpx.AsyncClient):
    from alembic import command

    from migrations import runner

    tenant_id = await active_tenant(crash_stack, crash_api)
    dsn = crash_stack.pg.dsn(identifiers.tenant_database(tenant_id))
    await asyncio.to_thread(command.downgrade, runner.alembic_config(runner.DEMO_TREE, dsn), "t0001")
    catalog = await asyncpg.connect(crash_stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE placements SET tenant_revision = 't0001' WHERE tenant_id = $1::uuid", tenant_id)
    finally:
        await catalog.close()
    run = (await crash_api.post("/v1/migrations", json={"tenants": [tenant_id], "canary": 0})).json()
    # the run's coordinator is a worker too: the first (paused) one queues the operation

    async def finished() -> dict | None:
        state = (await crash_api.get(f"/v1/migrations/{run['id']}")).json()
        return state if state["state"] != "running" else None

    state = await kill_at_then_finish(crash_stack, step, finished)
    assert state["state"] == "succeeded", state
    assert (await crash_api.get(f"/v1/tenants/{tenant_id}")).json()["tenant_revision"] == runner.head(runner.DEMO_TREE)


async def test_after_all_the_crashes_catalog_and_server_agree(crash_stack: Stack):
    """Runs last in this module: every tenant the crashes above left behind is exactly where the
    catalog says, at its revision, and nothing without a catalog row remains on the server."""
    from provisioning.reconcile import reconcile
    from provisioning.sealing import SecretBox

    catalog = await asyncpg.connect(crash_stack.catalog_dsn)
    try:
        report = await reconcile(catalog, SecretBox(crash_stack.settings.secret_key))
    finally:
        await catalog.close()
    assert report.unreachable == []
    assert report.findings == []
