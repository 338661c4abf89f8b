"""SIGKILL the worker at every step boundary of a backup and of an in-place restore; a restarted
worker finishes the operation, nothing partial is listed as succeeded, the servers hold the
tenant's one copy with the data the backup recorded, and no restore role (tp_restore_<operation>)
is left by a restore, drill or clone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.identifiers import SHARED_DATABASE
from provisioning.pipelines import BACKUP, CLONE, RESTORE, VERIFY
from tests.conftest import Stack, admin_client, extra_postgres, make_stack, stop_process, unique_slug, wait_for
from tests.provisioning.test_backup_restore import no_leftovers
from tests.provisioning.test_crash_recovery import kill_at_then_finish

BACKUP_BOUNDARIES = [*BACKUP.step_names, *(f"after:{s}" for s in BACKUP.step_names), "finish"]
VERIFY_BOUNDARIES = [*VERIFY.step_names, *(f"after:{s}" for s in VERIFY.step_names), "finish"]
CLONE_BOUNDARIES = [*CLONE.step_names, *(f"after:{s}" for s in CLONE.step_names), "finish"]
RESTORE_BOUNDARIES = [*RESTORE.step_names, *(f"after:{s}" for s in RESTORE.step_names), "finish"]


@pytest.fixture(scope="module")
def backup_crash_pg(tmp_root):
    with extra_postgres(tmp_root, "pg-backup-crash") as server:
        yield server


@pytest.fixture(scope="module")
async def bc_stack(backup_crash_pg, redis_server) -> Stack:
    return await make_stack(backup_crash_pg, redis_server.url, "catalog_backup_crash")


@pytest.fixture(scope="module")
async def bc_api(bc_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(bc_stack) as client:
        yield client


async def tenant_db(stack: Stack, tenant: dict) -> asyncpg.Connection:
    return await asyncpg.connect(stack.pg.dsn(identifiers.tenant_database(tenant["id"])))


async def names(stack: Stack, tenant: dict) -> list[str]:
    conn = await tenant_db(stack, tenant)
    try:
        return [r["name"] for r in await conn.fetch("SELECT name FROM projects ORDER BY name")]
    finally:
        await conn.close()


async def insert(stack: Stack, tenant: dict, *values: str) -> None:
    conn = await tenant_db(stack, tenant)
    try:
        await conn.executemany("INSERT INTO projects (name) VALUES ($1)", [(v,) for v in values])
    finally:
        await conn.close()


async def active_tenant(stack: Stack, api: httpx.AsyncClient) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("bc"), "name": "Crash", "tier": "dedicated"})
    worker = stack.start_worker()
    try:
        return await wait_for(api, r.json()["tenant"]["id"], "active")
    finally:
        stop_process(worker)


def store_files(stack: Stack, tenant_id: str) -> list[str]:
    folder = Path(urlsplit(stack.settings.backup_store_url).path) / "tenants" / tenant_id
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


async def no_restore_role(stack: Stack, op_id: str) -> None:
    """The operation's restore role (pg_restore's login) went with it, wherever the kill came."""
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", identifiers.restore_role(op_id))
    finally:
        await admin.close()


async def operation_ended(api: httpx.AsyncClient, op_id: str) -> dict | None:
    op = (await api.get(f"/v1/operations/{op_id}")).json()
    return op if op["state"] in ("succeeded", "failed") else None


@pytest.mark.parametrize("step", BACKUP_BOUNDARIES)
async def test_backup_survives_sigkill_at(step: str, bc_stack: Stack, bc_api: httpx.AsyncClient):
    tenant = await active_tenant(bc_stack, bc_api)
    await insert(bc_stack, tenant, "a", "b")
    r = await bc_api.post(f"/v1/tenants/{tenant['id']}/backups")
    backup_id, op_id = r.json()["backup"]["id"], r.json()["operation_id"]

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, op_id))

    assert op["state"] == "succeeded", op
    backup = (await bc_api.get(f"/v1/backups/{backup_id}")).json()
    assert backup["state"] == "succeeded" and backup["size_bytes"] > 0
    assert {t["name"]: t["rows"] for t in backup["tables"]}["projects"] == 2
    # the object and its digest, nothing else (no temporary left by the killed writer)
    assert store_files(bc_stack, tenant["id"]) == [f"backups/{backup_id}.tpbk", f"backups/{backup_id}.tpbk.sha256"]


async def backed_up_tenant(stack: Stack, api: httpx.AsyncClient) -> tuple[dict, str]:
    """An active tenant with projects a and b, and a succeeded backup of it."""
    tenant = await active_tenant(stack, api)
    await insert(stack, tenant, "a", "b")
    r = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    backup_id, op_id = r.json()["backup"]["id"], r.json()["operation_id"]
    worker = stack.start_worker()
    try:
        for _ in range(30):
            op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 5})).json()
            if op["state"] == "succeeded":
                break
        assert op["state"] == "succeeded", op
    finally:
        stop_process(worker)
    return tenant, backup_id


@pytest.mark.parametrize("step", RESTORE_BOUNDARIES)
async def test_restore_survives_sigkill_at(step: str, bc_stack: Stack, bc_api: httpx.AsyncClient):
    tenant, backup_id = await backed_up_tenant(bc_stack, bc_api)
    await insert(bc_stack, tenant, "c")
    r = await bc_api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup_id})
    assert r.status_code == 202, r.text

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, r.json()["operation_id"]))

    assert op["state"] == "succeeded", op
    assert (await bc_api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "active"
    assert await names(bc_stack, tenant) == ["a", "b"]
    await no_leftovers(bc_stack, tenant["id"])
    await no_restore_role(bc_stack, op["id"])


@pytest.mark.parametrize("step", VERIFY_BOUNDARIES)
async def test_drill_survives_sigkill_at(step: str, bc_stack: Stack, bc_api: httpx.AsyncClient):
    tenant, backup_id = await backed_up_tenant(bc_stack, bc_api)
    r = await bc_api.post(f"/v1/backups/{backup_id}/verify")
    assert r.status_code == 202, r.text

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, r.json()["operation_id"]))

    assert op["state"] == "succeeded", op
    backup = (await bc_api.get(f"/v1/backups/{backup_id}")).json()
    assert backup["verified_at"] is not None and backup["drill_result"]["ok"] is True
    await no_restore_role(bc_stack, op["id"])
    admin = await asyncpg.connect(bc_stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                        "tp_vd_" + backup_id.replace("-", ""))
    finally:
        await admin.close()
    assert await names(bc_stack, tenant) == ["a", "b"]


@pytest.mark.parametrize("step", CLONE_BOUNDARIES)
async def test_clone_survives_sigkill_at(step: str, bc_stack: Stack, bc_api: httpx.AsyncClient):
    """A dedicated tenant's backup cloned onto the shared tier, the worker killed at each boundary."""
    source, backup_id = await backed_up_tenant(bc_stack, bc_api)
    r = await bc_api.post("/v1/tenants", json={"slug": unique_slug("bcc"), "name": "Clone", "tier": "shared",
                                              "from_backup": backup_id})
    assert r.status_code == 202, r.text
    clone_id = r.json()["tenant"]["id"]

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, r.json()["operation_id"]))

    assert op["state"] == "succeeded", op
    assert (await bc_api.get(f"/v1/tenants/{clone_id}")).json()["status"] == "active"
    shared = await asyncpg.connect(bc_stack.pg.dsn(SHARED_DATABASE))
    try:
        rows = await shared.fetch("SELECT name FROM projects WHERE tenant_id = $1::uuid ORDER BY name", clone_id)
    finally:
        await shared.close()
    assert [r["name"] for r in rows] == ["a", "b"]  # copied once, not twice, whatever step was repeated
    await no_leftovers(bc_stack, clone_id)  # the scratch database is gone
    await no_restore_role(bc_stack, op["id"])
    assert await names(bc_stack, source) == ["a", "b"]


PRE_DELETE_BOUNDARIES = ["backup_before_delete", "after:backup_before_delete", "block_connections"]
PRE_MOVE_BOUNDARIES = ["backup_before_move", "after:backup_before_move", "plan_move"]


async def backups_of(api: httpx.AsyncClient, tenant_id: str) -> list[dict]:
    return (await api.get(f"/v1/tenants/{tenant_id}/backups")).json()["items"]


@pytest.mark.parametrize("step", PRE_DELETE_BOUNDARIES)
async def test_a_delete_takes_its_backup_first_across_a_sigkill_at(step: str, bc_stack: Stack,
                                                                   bc_api: httpx.AsyncClient):
    tenant = await active_tenant(bc_stack, bc_api)
    await insert(bc_stack, tenant, "a", "b")
    r = await bc_api.delete(f"/v1/tenants/{tenant['id']}")
    assert r.status_code == 202, r.text

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, r.json()["operation_id"]),
                                   BACKUP_BEFORE_DELETE="true")

    assert op["state"] == "succeeded", op
    assert (await bc_api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "deleted"
    (backup,) = await backups_of(bc_api, tenant["id"])  # one, however often the step ran
    assert (backup["trigger"], backup["state"], backup["operation_id"]) == ("pre_delete", "succeeded", op["id"])
    assert {t["name"]: t["rows"] for t in backup["tables"]}["projects"] == 2
    assert store_files(bc_stack, tenant["id"]) == [f"backups/{backup['id']}.tpbk",
                                                    f"backups/{backup['id']}.tpbk.sha256"]


@pytest.mark.parametrize("step", PRE_MOVE_BOUNDARIES)
async def test_a_move_takes_its_backup_first_across_a_sigkill_at(step: str, bc_stack: Stack,
                                                                 bc_api: httpx.AsyncClient):
    tenant = await active_tenant(bc_stack, bc_api)
    await insert(bc_stack, tenant, "a", "b")
    r = await bc_api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "schema"})
    assert r.status_code == 202, r.text

    op = await kill_at_then_finish(bc_stack, step, lambda: operation_ended(bc_api, r.json()["operation_id"]),
                                   BACKUP_BEFORE_MOVE="true")

    assert op["state"] == "succeeded", op
    assert (await bc_api.get(f"/v1/tenants/{tenant['id']}")).json()["tier"] == "schema"
    (backup,) = await backups_of(bc_api, tenant["id"])
    assert (backup["trigger"], backup["state"], backup["tier"]) == ("pre_move", "succeeded", "dedicated")
    assert {t["name"]: t["rows"] for t in backup["tables"]}["projects"] == 2


async def test_without_the_settings_a_move_and_a_delete_take_no_backup(bc_stack: Stack, bc_api: httpx.AsyncClient):
    tenant = await active_tenant(bc_stack, bc_api)
    worker = bc_stack.start_worker()
    try:
        moved = await bc_api.post(f"/v1/tenants/{tenant['id']}/move", json={"tier": "shared"})
        for _ in range(30):
            if await operation_ended(bc_api, moved.json()["operation_id"]):
                break
            await bc_api.get(f"/v1/operations/{moved.json()['operation_id']}", params={"wait": 3})
        deleted = await bc_api.delete(f"/v1/tenants/{tenant['id']}")
        for _ in range(30):
            if op := await operation_ended(bc_api, deleted.json()["operation_id"]):
                break
            await bc_api.get(f"/v1/operations/{deleted.json()['operation_id']}", params={"wait": 3})
        assert op and op["state"] == "succeeded", op
    finally:
        stop_process(worker)
    assert await backups_of(bc_api, tenant["id"]) == []
