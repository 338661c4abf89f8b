"""SIGKILL the worker at every step boundary of an erasure; a restarted worker finishes it, with
the same report (the counts taken before anything was removed) and nothing of the tenant left.
The tenants have KMS keys of their own (BACKUP_KMS_KEY_PER_TENANT, moto), so the kills around
schedule_kms_key_deletion leave a rerun that schedules the key once, with the date KMS set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from provisioning.pipelines import ERASE
from tests.conftest import Stack, admin_client, extra_postgres, stop_process
from tests.provisioning.test_crash_recovery import kill_at_then_finish
from tests.provisioning.test_erasure import assert_nothing_left, offboarded_tenant
from tests.provisioning.test_erasure_kms import (  # noqa: F401 (fixtures: the moto server, its settings)
    assert_scheduled,
    kms,
    kms_env,
    kms_key_of,
    kms_stack_on,
    moto_endpoint,
)

ERASE_BOUNDARIES = [*ERASE.step_names, *(f"after:{s}" for s in ERASE.step_names), "finish"]


@pytest.fixture(scope="module")
def erase_crash_pg(tmp_root):
    with extra_postgres(tmp_root, "pg-erase-crash") as server:
        yield server


@pytest.fixture(scope="module")
async def ec_stack(erase_crash_pg, redis_server, kms_env) -> Stack:  # noqa: F811
    return await kms_stack_on(erase_crash_pg, redis_server.url, "catalog_erase_crash")


@pytest.fixture(scope="module")
async def ec_api(ec_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(ec_stack) as client:
        yield client


@pytest.mark.parametrize("step", ERASE_BOUNDARIES)
async def test_erasure_survives_sigkill_at(step: str, ec_stack: Stack, ec_api: httpx.AsyncClient,
                                           kms_env: dict[str, str], kms: Any):  # noqa: F811
    worker = ec_stack.start_worker(**kms_env)
    try:
        tenant = await offboarded_tenant(ec_stack, ec_api, "dedicated")
    finally:
        stop_process(worker)
    key_id = await kms_key_of(ec_stack, tenant["id"])
    assert (await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, step, completed, **kms_env)

    details = {p["place"]: p["details"] for p in report["places"]}  # type: ignore[index]
    assert (details["backups"]["removed"], details["store_objects"]["removed"], details["data_key"]["removed"],
            details["memberships"]["removed"]) == (1, 1, 1, 1), details
    assert details["redis"]["removed"] >= 4
    assert details["data_key"]["kms_key_id"] == key_id
    assert_scheduled(details["data_key"]["kms_deletion_date"], kms, key_id)
    assert all(p["done"] for p in report["places"] if p["place"] != "stripe_customer")  # type: ignore[index]
    await assert_nothing_left(ec_stack, tenant)
    again = await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert again.status_code == 200 and again.json() == report
