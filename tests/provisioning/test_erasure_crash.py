"""SIGKILL the worker at every step boundary of an erasure; a restarted worker finishes it, with
the same report (the counts taken before anything was removed) and nothing of the tenant left."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from provisioning.pipelines import ERASE
from tests.conftest import Stack, admin_client, extra_postgres, make_stack, stop_process
from tests.provisioning.test_crash_recovery import kill_at_then_finish
from tests.provisioning.test_erasure import assert_nothing_left, offboarded_tenant

ERASE_BOUNDARIES = [*ERASE.step_names, *(f"after:{s}" for s in ERASE.step_names), "finish"]


@pytest.fixture(scope="module")
def erase_crash_pg(tmp_root):
    with extra_postgres(tmp_root, "pg-erase-crash") as server:
        yield server


@pytest.fixture(scope="module")
async def ec_stack(erase_crash_pg, redis_server) -> Stack:
    return await make_stack(erase_crash_pg, redis_server.url, "catalog_erase_crash")


@pytest.fixture(scope="module")
async def ec_api(ec_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(ec_stack) as client:
        yield client


@pytest.mark.parametrize("step", ERASE_BOUNDARIES)
async def test_erasure_survives_sigkill_at(step: str, ec_stack: Stack, ec_api: httpx.AsyncClient):
    worker = ec_stack.start_worker()
    try:
        tenant = await offboarded_tenant(ec_stack, ec_api, "dedicated")
    finally:
        stop_process(worker)
    assert (await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, step, completed)

    details = {p["place"]: p["details"] for p in report["places"]}  # type: ignore[index]
    assert (details["backups"]["removed"], details["store_objects"]["removed"], details["data_key"]["removed"],
            details["memberships"]["removed"]) == (1, 1, 1, 1), details
    assert details["redis"]["removed"] >= 4
    assert all(p["done"] for p in report["places"] if p["place"] != "stripe_customer")  # type: ignore[index]
    await assert_nothing_left(ec_stack, tenant)
    again = await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert again.status_code == 200 and again.json() == report
