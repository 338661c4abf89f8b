"""Moving tenants between tiers and servers: data intact and verified, old copy removed, routers
switched at once; a failed move leaves the tenant where it was, active; draining a server."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from contracts import identifiers
from tests.conftest import (
    Stack,
    add_unreachable_server,
    extra_postgres,
    unique_slug,
    wait_for,
)


@pytest.fixture(scope="module")
async def pg2(tmp_root, api):
    with extra_postgres(tmp_root, "pg-moves") as server:
        name = f"second-{uuid.uuid4().hex[:6]}"
        r = await api.post("/v1/database-servers", json={"name": name, "dsn": server.dsn(), "capacity_databases": 50})
        assert r.status_code == 201, r.text
        await api.post(f"/v1/database-servers/{name}/cordon")  # only tests that name it place tenants here
        try:
            yield server, name
        finally:
            await api.post(f"/v1/database-servers/{name}/cordon")


def host(t: dict) -> dict[str, str]:
    return {"Host": f"{t['slug']}.localhost"}


async def create(api, tier: str, server: str | None = None) -> dict:
    body = {"slug": unique_slug("mv"), "name": "Mover", "tier": tier, **({"server": server} if server else {})}
    r = await api.post("/v1/tenants", json=body)
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


async def wait_op(api, op_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        op = (await api.get(f"/v1/operations/{op_id}")).json()
        if op["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return op
        await asyncio.sleep(0.1)


async def move(api, tenant: dict, tier: str, server: str | None = None) -> dict:
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": tier, **({"server": server} if server else {})})
    assert r.status_code == 202, r.text
    op = await wait_op(api, r.json()["operation_id"])
    assert op["state"] == "succeeded", op
    return op


async def names(tenant_app, tenant: dict) -> list[str]:
    r = await tenant_app.get("/api/projects", headers=host(tenant))
    assert r.status_code == 200, r.text
    return sorted(p["name"] for p in r.json())


async def test_a_tenant_travels_through_every_tier_with_its_data(api, tenant_app, stack: Stack):
    tenant = await create(api, "shared")
    neighbour = await create(api, "shared")
    await tenant_app.post("/api/projects", json={"name": "neighbour"}, headers=host(neighbour))
    expected = []
    for i, tier in enumerate(["schema", "dedicated", "shared"]):
        for j in range(3):
            name = f"p{i}{j}"
            assert (await tenant_app.post("/api/projects", json={"name": name}, headers=host(tenant))).status_code == 201
            expected.append(name)
        before = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
        op = await move(api, tenant, tier)
        after = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
        assert after["tier"] == tier and after["status"] == "active" and after["server"] == before["server"]
        assert [s["name"] for s in op["steps"]] == ["backup_before_move", "plan_move", "prepare_target", "pause_writes", "copy_data",
                                                    "verify_copy", "switch_placement", "remove_old_copy"]
        assert await names(tenant_app, tenant) == sorted(expected)  # the router follows at once
        # new rows get fresh ids after the copied ones
        assert (await tenant_app.post("/api/projects", json={"name": f"after-{tier}"}, headers=host(tenant))).status_code == 201
        expected.append(f"after-{tier}")
    assert await names(tenant_app, neighbour) == ["neighbour"]

    admin = await asyncpg.connect(stack.pg.dsn())
    try:  # nothing of the old copies is left
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                        identifiers.tenant_database(tenant["id"]))
        assert not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", identifiers.tenant_role(tenant["id"]))
    finally:
        await admin.close()
    schemas = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
    try:
        assert not await schemas.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                          identifiers.tenant_schema(tenant["id"]))
    finally:
        await schemas.close()
    rows = await asyncpg.connect(stack.pg.dsn(identifiers.SHARED_DATABASE))
    try:
        assert await rows.fetchval("SELECT count(*) FROM projects WHERE tenant_id = $1::uuid", tenant["id"]) == len(expected)
    finally:
        await rows.close()


async def test_a_move_to_another_server_and_a_drain_back(api, tenant_app, stack: Stack, pg2):
    server2, name2 = pg2
    tenant = await create(api, "dedicated")
    await tenant_app.post("/api/projects", json={"name": "travels"}, headers=host(tenant))
    op = await move(api, tenant, "dedicated", name2)
    assert op["steps"][4]["state"] == "succeeded"
    assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["server"] == name2
    assert await names(tenant_app, tenant) == ["travels"]
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                        identifiers.tenant_database(tenant["id"]))
    finally:
        await admin.close()

    r = await api.post(f"/v1/database-servers/{name2}/drain")
    assert r.status_code == 202 and r.json()["status"] == "cordoned"
    for op_id in r.json()["operation_ids"]:
        assert (await wait_op(api, op_id))["state"] == "succeeded"
    back = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert back["server"] != name2 and back["tier"] == "dedicated"
    assert await names(tenant_app, tenant) == ["travels"]


async def test_a_failed_move_leaves_the_tenant_where_it_was(api, tenant_app, stack: Stack):
    tenant = await create(api, "dedicated")
    await tenant_app.post("/api/projects", json={"name": "stays"}, headers=host(tenant))
    broken = await add_unreachable_server(stack, status="cordoned")
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "dedicated", "server": broken})
    op = await wait_op(api, r.json()["operation_id"])
    assert op["state"] == "failed"
    after = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert after["status"] == "active" and after["server"] == "local" and after["tier"] == "dedicated"
    assert await names(tenant_app, tenant) == ["stays"]
    assert (await tenant_app.post("/api/projects", json={"name": "writes-again"}, headers=host(tenant))).status_code == 201


async def test_bad_moves(api):
    tenant = await create(api, "dedicated")
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "dedicated", "server": "local"})
    assert r.status_code == 409 and r.json()["code"] == "nothing_to_move"
    ops_before = (await api.get(f"/v1/tenants/{tenant['id']}/operations")).text
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "dedicated"})  # same tier, no server
    assert r.status_code == 409 and r.json()["code"] == "nothing_to_move", r.text
    assert (await api.get(f"/v1/tenants/{tenant['id']}/operations")).text == ops_before  # nothing queued
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "sharded"})
    assert r.status_code == 422
    r = await api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "schema", "server": "no-such"})
    assert r.status_code == 422 and r.json()["code"] == "unknown_server"


async def test_requests_during_moves_never_see_another_tenant(api, tenant_app):
    """Reads and writes keep flowing while tenants move between tiers: every read holds only the
    reader's rows, every acknowledged write survives the move, and writes refused during the pause
    are told so (503)."""
    movers = [await create(api, "shared"), await create(api, "schema")]
    bystander = await create(api, "shared")
    acknowledged: dict[str, set[str]] = {t["slug"]: set() for t in [*movers, bystander]}
    refused = 0
    stop = asyncio.Event()

    async def traffic(tenant: dict) -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            name = f"{tenant['slug']}-{i}"
            r = await tenant_app.post("/api/projects", json={"name": name}, headers=host(tenant))
            if r.status_code == 201:
                acknowledged[tenant["slug"]].add(name)
            else:
                assert r.status_code == 503 and r.json()["code"] == "tenant_unavailable", r.text
                refused += 1
            r = await tenant_app.get("/api/projects", headers=host(tenant))
            assert r.status_code == 200, r.text
            seen = {p["name"] for p in r.json()}
            assert all(n.startswith(tenant["slug"] + "-") for n in seen), "another tenant's rows"
            i += 1
            await asyncio.sleep(0.01)  # a refused write and a cached read may not yield at all

    workers = [asyncio.create_task(traffic(t)) for t in [*movers, bystander]]
    try:
        ops = [(await api.post(f"/v1/tenants/{movers[0]['id']}/move", json={"tier": "dedicated"})).json(),
               (await api.post(f"/v1/tenants/{movers[1]['id']}/move", json={"tier": "shared"})).json()]
        for op in ops:
            done = await wait_op(api, op["operation_id"])
            assert done["state"] == "succeeded", done
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    for tenant in [*movers, bystander]:
        r = await tenant_app.get("/api/projects", headers=host(tenant))
        assert acknowledged[tenant["slug"]] <= {p["name"] for p in r.json()}
    assert refused > 0, "the write pause should have refused some writes"


async def test_a_move_reports_its_copy_progress(api, tenant_app):
    """GET /v1/operations/{id} shows what the copy did: every table, every row, the bytes streamed."""
    tenant = await create(api, "dedicated")
    for i in range(5):
        r = await tenant_app.post("/api/projects", headers=host(tenant), json={"name": f"p{i}"})
        assert r.status_code in (200, 201), r.text
    op = await move(api, tenant, "schema")
    progress = op["progress"]
    assert progress["phase"] == "copy_data" and progress["tables_total"] >= 1
    assert progress["tables_done"] == progress["tables_total"]
    assert progress["rows_copied"] >= 5 and progress["bytes_copied"] > 0
    assert op["cancel_requested"] is False
