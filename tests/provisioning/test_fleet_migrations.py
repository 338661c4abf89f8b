"""Fleet migrations: canary then waves, per-tenant revision in the catalog, failures isolated unless
halting, reruns resume; the router refuses tenants below its minimum revision."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import asyncpg

from contracts import identifiers
from migrations import runner
from tests.conftest import ROOT, Stack, create_active_tenant, unique_slug, wait_for
from tests.control_plane.cli_api import api_process, operator_env


async def put_back(stack: Stack, tenant: dict, revision: str) -> None:
    """Take a dedicated tenant back to an older revision, as if it had been created before it."""
    dsn = stack.pg.dsn(identifiers.tenant_database(tenant["id"]))
    await asyncio.to_thread(lambda: __import__("alembic.command", fromlist=["downgrade"]).downgrade(
        runner.alembic_config(runner.DEMO_TREE, dsn), revision))
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE placements SET tenant_revision = $2 WHERE tenant_id = $1::uuid",
                              tenant["id"], revision)
    finally:
        await catalog.close()


async def wait_run(api, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = (await api.get(f"/v1/migrations/{run_id}")).json()
        if run["state"] != "running" or time.monotonic() > deadline:
            return run
        await asyncio.sleep(0.2)


def test_tenant_revision_ids_are_ordered_text():
    revisions = sorted(runner.DEMO_TREE.revisions())
    assert all(len(r) == 5 and r[0] == "t" and r[1:].isdigit() for r in revisions)
    assert revisions[-1] == runner.head(runner.DEMO_TREE)


async def test_a_fleet_migration_upgrades_the_selection_in_waves(api, stack: Stack):
    tenants = [await create_active_tenant(api) for _ in range(5)]
    head = runner.head(runner.DEMO_TREE)
    for t in tenants[:4]:
        await put_back(stack, t, "t0001")
    r = await api.post("/v1/migrations", json={"target": "head", "tenants": [t["slug"] for t in tenants],
                                               "canary": 1, "wave_size": 2})
    assert r.status_code == 202, r.text
    run = await wait_run(api, r.json()["id"])
    assert run["state"] == "succeeded", run
    assert run["counts"]["succeeded"] == 5
    assert sorted({t["wave"] for t in run["tenants"]}) == [0, 1, 2]
    by_slug = {t["slug"]: t for t in run["tenants"]}
    assert by_slug[tenants[4]["slug"]]["from_revision"] == head  # already there: nothing to do
    for t in tenants:
        assert (await api.get(f"/v1/tenants/{t['id']}")).json()["tenant_revision"] == head
        actual = await asyncpg.connect(stack.pg.dsn(identifiers.tenant_database(t["id"])))
        try:
            assert await actual.fetchval("SELECT version_num FROM alembic_version") == head
        finally:
            await actual.close()
    ops = (await api.get(f"/v1/tenants/{tenants[0]['id']}/operations")).json()["items"]
    assert ops[0]["kind"] == "migrate_tenant" and ops[0]["state"] == "succeeded"


async def test_one_failure_does_not_stop_the_others_unless_halting(api, stack: Stack):
    bad = await create_active_tenant(api)  # the oldest: the canary (runs order tenants by age per server)
    good = [await create_active_tenant(api) for _ in range(3)]
    for t in [*good, bad]:
        await put_back(stack, t, "t0001")
    # break one tenant: a column the migration adds already exists
    conn = await asyncpg.connect(stack.pg.dsn(identifiers.tenant_database(bad["id"])))
    try:
        await conn.execute("ALTER TABLE projects ADD COLUMN archived boolean")
    finally:
        await conn.close()
    keys = [bad["slug"], *(t["slug"] for t in good)]
    run = await wait_run(api, (await api.post("/v1/migrations", json={"tenants": keys, "canary": 1, "wave_size": 1})).json()["id"])
    assert run["state"] == "failed"
    assert run["counts"] == {"pending": 0, "queued": 0, "succeeded": 3, "failed": 1, "skipped": 0}
    failed = [t for t in run["tenants"] if t["state"] == "failed"]
    assert failed[0]["slug"] == bad["slug"] and "archived" in failed[0]["error"]
    assert (await api.get(f"/v1/tenants/{bad['id']}")).json()["status"] == "active"  # still serving t0001

    halting = await wait_run(api, (await api.post("/v1/migrations", json={
        "tenants": keys, "canary": 1, "wave_size": 1, "halt_on_error": True})).json()["id"])
    assert halting["state"] == "halted"
    assert halting["counts"]["pending"] == 3  # the canary failed; nothing else was touched


async def test_the_cli_follows_a_run_and_a_rerun_resumes(api, stack: Stack):
    t = await create_active_tenant(api)
    await put_back(stack, t, "t0001")
    cmd = [sys.executable, "-m", "control_plane.cli", "migrate", "--tenant", t["slug"], "--canary", "0"]
    with api_process(stack) as url:  # tenantctl's admin commands talk to the API
        env = operator_env(url, stack.settings.admin_token)
        first = await asyncio.to_thread(subprocess.run, cmd, env=env, cwd=ROOT, capture_output=True,
                                        text=True, timeout=120)
        assert first.returncode == 0, first.stdout + first.stderr
        line = next(line for line in first.stdout.splitlines() if line.startswith(t["slug"]))
        assert line.split()[2:5] == ["succeeded", "t0001", runner.head(runner.DEMO_TREE)], first.stdout
        again = await asyncio.to_thread(subprocess.run, cmd, env=env, cwd=ROOT, capture_output=True,
                                        text=True, timeout=120)
    assert again.returncode == 0 and "succeeded 1" in again.stdout


async def test_router_refuses_tenants_below_its_minimum_revision(api, stack: Stack):
    from litestar.testing import AsyncTestClient

    from demo_app.app import create_app
    from tenant_router.config import RouterConfig

    old, new = await create_active_tenant(api), await create_active_tenant(api)
    await put_back(stack, old, "t0001")
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          min_tenant_revision=runner.head(runner.DEMO_TREE))
    async with AsyncTestClient(create_app(config)) as app:
        r = await app.get("/api/projects", headers={"Host": f"{old['slug']}.localhost"})
        assert r.status_code == 503 and r.json()["code"] == "tenant_migrating" and r.headers["retry-after"]
        assert (await app.get("/api/projects", headers={"Host": f"{new['slug']}.localhost"})).status_code == 200


async def test_bad_requests(api):
    assert (await api.post("/v1/migrations", json={"target": "t9999"})).json()["code"] == "unknown_revision"
    assert (await api.post("/v1/migrations", json={"tenants": [unique_slug()]})).json()["code"] == "tenant_not_found"
    assert (await api.post("/v1/migrations", json={"wave_size": 0})).status_code == 422
    assert (await api.get("/v1/migrations/nope")).json()["code"] == "migration_run_not_found"
    _ = wait_for


async def test_a_target_older_than_a_tenant_is_refused_not_reported_done(api, stack: Stack):
    """A downgrade would skip every tenant and end 'succeeded'; it is refused up front instead, through
    the API and through `tenantctl migrate --to`, and no run is created."""
    at_head, behind = await create_active_tenant(api), await create_active_tenant(api)
    await put_back(stack, behind, "t0001")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        runs_before = await catalog.fetchval("SELECT count(*) FROM migration_runs")
        r = await api.post("/v1/migrations", json={"target": "t0001", "tenants": [at_head["slug"], behind["slug"]]})
        assert r.status_code == 422 and r.json()["code"] == "downgrade_not_supported", r.text
        assert r.json()["current"] == runner.head(runner.DEMO_TREE) and r.json()["target"] == "t0001"
        r = await api.post("/v1/migrations", json={"target": "t0001"})  # the whole fleet
        assert r.status_code == 422 and r.json()["code"] == "downgrade_not_supported"
        cmd = [sys.executable, "-m", "control_plane.cli", "migrate", "--to", "t0001", "--tenant", at_head["slug"]]
        with api_process(stack) as url:
            cli = await asyncio.to_thread(subprocess.run, cmd, env=operator_env(url, stack.settings.admin_token),
                                          cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0 and "migrations only go up" in cli.stderr, cli.stdout + cli.stderr
        assert await catalog.fetchval("SELECT count(*) FROM migration_runs") == runs_before
        # the same revision as the tenant is a no-op upgrade, still accepted
        r = await api.post("/v1/migrations", json={"target": "t0001", "tenants": [behind["slug"]], "canary": 0})
        assert r.status_code == 202, r.text
        assert (await wait_run(api, r.json()["id"]))["state"] == "succeeded"
    finally:
        await catalog.close()


async def test_a_tenant_with_another_open_operation_is_skipped_and_the_wave_goes_on(api, stack: Stack):
    busy, free = await create_active_tenant(api), await create_active_tenant(api)
    for t in (busy, free):
        await put_back(stack, t, "t0001")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:  # an operation of its own, open, not due for an hour: no worker touches it meanwhile
        op_id = await catalog.fetchval(
            "INSERT INTO operations (id, kind, tenant_id, state, params, next_attempt_at) "
            "VALUES (gen_random_uuid(), 'migrate_tenant', $1::uuid, 'queued', '{}'::jsonb, now() + interval '1 hour') "
            "RETURNING id", busy["id"])
        run = await wait_run(api, (await api.post("/v1/migrations", json={
            "tenants": [busy["slug"], free["slug"]], "canary": 0, "wave_size": 2})).json()["id"])
    finally:
        await catalog.execute("UPDATE operations SET state = 'failed', finished_at = now() WHERE id = $1", op_id)
        await catalog.close()
    by_slug = {t["slug"]: t for t in run["tenants"]}
    assert by_slug[busy["slug"]]["state"] == "skipped" and "another operation" in by_slug[busy["slug"]]["error"]
    assert by_slug[free["slug"]]["state"] == "succeeded"
    assert run["state"] == "succeeded", run


async def _wave_times(stack: Stack, run_id: str) -> dict[int, tuple[float, float]]:
    """wave -> (first operation queued, last operation finished), catalog clock."""
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        rows = await catalog.fetch(
            "SELECT rt.wave, extract(epoch FROM min(o.created_at)) AS queued, "
            "extract(epoch FROM max(o.finished_at)) AS finished FROM migration_run_tenants rt "
            "JOIN operations o ON o.id = rt.operation_id WHERE rt.run_id = $1 GROUP BY rt.wave", uuid.UUID(run_id))
    finally:
        await catalog.close()
    return {r["wave"]: (float(r["queued"]), float(r["finished"])) for r in rows}


async def test_waves_overlap_unless_halting_and_the_canary_always_ends_first(api, stack: Stack):
    tenants = [await create_active_tenant(api) for _ in range(5)]
    keys = [t["slug"] for t in tenants]
    for halt in (False, True):
        for t in tenants:
            await put_back(stack, t, "t0001")
        run = await wait_run(api, (await api.post("/v1/migrations", json={
            "tenants": keys, "canary": 1, "wave_size": 2, "halt_on_error": halt})).json()["id"])
        assert run["state"] == "succeeded" and run["counts"]["succeeded"] == 5, run
        waves = await _wave_times(stack, run["id"])
        assert sorted(waves) == [0, 1, 2]
        assert waves[1][0] >= waves[0][1] and waves[2][0] >= waves[0][1]  # the canary first, always
        if halt:
            assert waves[2][0] >= waves[1][1]  # one wave after the other
        else:
            assert waves[2][0] < waves[1][1]  # queued together with wave 1, before it ended
