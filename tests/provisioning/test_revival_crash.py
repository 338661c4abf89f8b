"""SIGKILL the worker at every step boundary of a deleted tenant's revival (`revive_tenant`); a
restarted worker finishes it: the tenant is active under its id with the rows of its backup,
copied once, and no scratch database is left. The default run keeps the first boundary; `make
chaos` (`-m chaos`) runs them all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from provisioning.pipelines import REVIVE
from tests.conftest import Stack, admin_client, extra_postgres, make_stack, stop_process
from tests.provisioning.test_backup_crash import backed_up_tenant, insert, names, operation_ended
from tests.provisioning.test_backup_restore import no_leftovers
from tests.provisioning.test_crash_recovery import kill_at_then_finish

REVIVE_BOUNDARIES = [*REVIVE.step_names, *(f"after:{s}" for s in REVIVE.step_names), "finish"]
SWEEP = [step if i == 0 else pytest.param(step, marks=pytest.mark.chaos) for i, step in enumerate(REVIVE_BOUNDARIES)]


@pytest.fixture(scope="module")
def revival_crash_pg(tmp_root):
    with extra_postgres(tmp_root, "pg-revival-crash") as server:
        yield server


@pytest.fixture(scope="module")
async def rc_stack(revival_crash_pg, redis_server) -> Stack:
    return await make_stack(revival_crash_pg, redis_server.url, "catalog_revival_crash")


@pytest.fixture(scope="module")
async def rc_api(rc_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(rc_stack) as client:
        yield client


async def deleted_tenant(stack: Stack, api: httpx.AsyncClient) -> tuple[dict, str]:
    """A dedicated tenant backed up with projects a and b, then given c, then deleted."""
    tenant, backup_id = await backed_up_tenant(stack, api)
    await insert(stack, tenant, "c")
    r = await api.delete(f"/v1/tenants/{tenant['id']}")
    worker = stack.start_worker()
    try:
        for _ in range(30):
            if op := await operation_ended(api, r.json()["operation_id"]):
                break
            await api.get(f"/v1/operations/{r.json()['operation_id']}", params={"wait": 3})
        assert op and op["state"] == "succeeded", op
    finally:
        stop_process(worker)
    return tenant, backup_id


@pytest.mark.parametrize("step", SWEEP)
async def test_revival_survives_sigkill_at(step: str, rc_stack: Stack, rc_api: httpx.AsyncClient):
    tenant, backup_id = await deleted_tenant(rc_stack, rc_api)
    r = await rc_api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup_id})
    assert r.status_code == 202, r.text

    op = await kill_at_then_finish(rc_stack, step, lambda: operation_ended(rc_api, r.json()["operation_id"]))

    assert op["state"] == "succeeded", op
    back = (await rc_api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert (back["status"], back["slug"], back["tier"]) == ("active", tenant["slug"], "dedicated")
    assert await names(rc_stack, tenant) == ["a", "b"]  # copied once, whatever step was repeated
    await no_leftovers(rc_stack, tenant["id"])
    events = (await rc_api.get("/v1/events", params={"tenant": tenant["id"], "type": "tenant.restored"})).json()
    assert [e["operation_id"] for e in events["items"]] == [op["id"]]  # one event, however often it ran
