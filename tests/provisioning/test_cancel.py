"""POST /v1/operations/{id}/cancel: a queued operation ends at once when a worker looks (no step
run), a running one at its next step boundary, also when the worker that ran it is SIGKILLed after
the request (the request is durable); it then reads failed with the error `cancelled`, the tenant as
the pipeline's failure leaves it, and a retry runs it to the end. Finished ones answer 409."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from provisioning.pipelines import pipeline_for
from tests.conftest import Stack, admin_client, make_stack, stop_process, unique_slug, wait_for
from tests.provisioning.test_crash_recovery import sigkill, wait_paused

CREATE = pipeline_for("create_tenant", "dedicated")


@pytest.fixture(scope="module")
async def cancel_stack(pg, redis_server) -> Stack:
    return await make_stack(pg, redis_server.url, "catalog_cancel")  # no worker serves it but ours


@pytest.fixture
async def cancel_api(cancel_stack):
    async with admin_client(cancel_stack) as client:
        yield client


async def _ended(api: httpx.AsyncClient, op_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 5})).json()
        if op["state"] in ("succeeded", "failed"):
            return op
    raise AssertionError(f"operation {op_id} did not end: {op}")


async def _create(api: httpx.AsyncClient) -> tuple[str, str]:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("cx"), "name": "C", "tier": "dedicated"})
    assert r.status_code == 202, r.text
    return r.json()["tenant"]["id"], r.json()["operation_id"]


async def test_a_queued_operation_is_cancelled_before_any_step_runs(cancel_stack, cancel_api):
    tenant_id, op_id = await _create(cancel_api)  # no worker yet: it stays queued
    r = await cancel_api.post(f"/v1/operations/{op_id}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "queued", r.text
    assert r.json()["cancel_requested"] is True
    audited = (await cancel_api.get("/v1/audit", params={"action": "operation.cancel"})).json()["items"]
    assert [e["target_id"] for e in audited if e["target_id"] == op_id] == [op_id], audited
    worker = cancel_stack.start_worker(SPARE_DATABASES="0")
    try:
        op = await _ended(cancel_api, op_id)
    finally:
        stop_process(worker)
    assert (op["state"], op["error"]) == ("failed", "cancelled")
    assert [s["state"] for s in op["steps"]][:1] == ["failed"]  # ended at its first boundary
    assert all(s["state"] != "succeeded" for s in op["steps"])
    assert (await cancel_api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "failed"
    # finished now: a second cancel is refused
    again = await cancel_api.post(f"/v1/operations/{op_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "operation_finished"


async def test_a_running_operation_is_cancelled_at_its_next_step_also_across_a_sigkill(cancel_stack, cancel_api):
    step = CREATE.step_names[2]
    tenant_id, op_id = await _create(cancel_api)
    paused = cancel_stack.start_worker(capture=True, SPARE_DATABASES="0", TENANTPLANE_TEST_PAUSE_BEFORE_STEP=step)
    try:
        await wait_paused(paused, step)
        r = await cancel_api.post(f"/v1/operations/{op_id}/cancel")
        assert r.status_code == 202 and r.json()["state"] == "running", r.text
    finally:
        sigkill(paused)  # the request outlives the worker that ran the operation
    worker = cancel_stack.start_worker(SPARE_DATABASES="0")
    try:
        op = await _ended(cancel_api, op_id)
        assert (op["state"], op["error"]) == ("failed", "cancelled")
        states = [s["state"] for s in op["steps"]]
        assert states[:2] == ["succeeded", "succeeded"] and states[2] == "failed"
        assert (await cancel_api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "failed"
        # a retry clears the request and runs the rest
        assert (await cancel_api.post(f"/v1/operations/{op_id}/retry")).status_code == 202
        await wait_for(cancel_api, tenant_id, "active")
        assert (await _ended(cancel_api, op_id))["state"] == "succeeded"
    finally:
        stop_process(worker)
    finished = await cancel_api.post(f"/v1/operations/{op_id}/cancel")
    assert finished.status_code == 409 and finished.json()["code"] == "operation_finished"


async def test_cancel_of_an_unknown_or_malformed_operation_is_404(cancel_api):
    for key in (str(uuid.uuid4()), "not-a-uuid", "'; DROP TABLE operations; --", "x" * 100):
        r = await cancel_api.post(f"/v1/operations/{key}/cancel")
        assert r.status_code == 404 and r.json()["code"] == "operation_not_found", (key, r.text)
    assert (await cancel_api.post("/v1/operations/" + "x" * 101 + "/cancel")).status_code in (400, 404, 422)


async def test_a_cancelled_move_runs_its_undo_and_leaves_the_tenant_where_it_was(cancel_stack, cancel_api):
    """Cancelled after its copy (worker SIGKILLed with the request pending): the half-made target
    is dropped (the move's undo), the tenant stays on its old placement, active."""
    import asyncpg

    from contracts import identifiers

    worker = cancel_stack.start_worker(SPARE_DATABASES="0")
    try:
        tenant_id, _ = await _create(cancel_api)
        await wait_for(cancel_api, tenant_id, "active")
    finally:
        stop_process(worker)
    r = await cancel_api.post(f"/v1/tenants/{tenant_id}/move", json={"tier": "schema"})
    assert r.status_code == 202, r.text
    op_id = r.json()["operation_id"]
    paused = cancel_stack.start_worker(capture=True, SPARE_DATABASES="0",
                                       TENANTPLANE_TEST_PAUSE_BEFORE_STEP="verify_copy")
    try:
        await wait_paused(paused, "verify_copy")
        assert (await cancel_api.post(f"/v1/operations/{op_id}/cancel")).status_code == 202
        op = (await cancel_api.get(f"/v1/operations/{op_id}")).json()
        assert op["cancel_requested"] is True and op["progress"]["tables_done"] == op["progress"]["tables_total"]
    finally:
        sigkill(paused)
    worker = cancel_stack.start_worker(SPARE_DATABASES="0")
    try:
        op = await _ended(cancel_api, op_id)
        assert (op["state"], op["error"]) == ("failed", "cancelled")
        tenant = await wait_for(cancel_api, tenant_id, "active")
        assert tenant["tier"] == "dedicated"
        # the undo runs after the failure is recorded: the target schema goes soon after
        admin = await asyncpg.connect(cancel_stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
        try:
            deadline = time.monotonic() + 30
            while await admin.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                                       identifiers.tenant_schema(tenant_id)):
                assert time.monotonic() < deadline, "the cancelled move's target schema was not dropped"
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
    finally:
        stop_process(worker)
