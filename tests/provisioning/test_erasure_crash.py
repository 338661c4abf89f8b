"""SIGKILL the worker at every step boundary of an erasure; a restarted worker finishes it, with
the same report (the counts taken before anything was removed), nothing of the tenant left and
its Stripe customer deleted (its subscription cancelled first). And a delete asked with
`?erase=true`, killed before its finish: the restarted worker deletes, then erases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from provisioning.pipelines import ERASE
from tests.conftest import Stack, admin_client, extra_postgres, make_stack, stop_process, unique_slug
from tests.control_plane.billing.fake_stripe import FakeStripe
from tests.provisioning.test_crash_recovery import kill_at_then_finish
from tests.provisioning.test_erasure import active, assert_nothing_left, offboarded_tenant
from tests.provisioning.test_erasure_stripe import (  # noqa: F401 (stripe_fake: a fixture)
    assert_stripe_erased,
    give_stripe_customer,
    stripe_env,
    stripe_fake,
)

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
async def test_erasure_survives_sigkill_at(step: str, ec_stack: Stack, ec_api: httpx.AsyncClient,
                                           stripe_fake: FakeStripe):  # noqa: F811
    worker = ec_stack.start_worker()
    try:
        tenant = await offboarded_tenant(ec_stack, ec_api, "dedicated")
    finally:
        stop_process(worker)
    # the delete's cancellation round has not run (this API has no Stripe key): the erasure cancels
    customer, sub = await give_stripe_customer(ec_stack, stripe_fake, tenant["id"])
    assert (await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, step, completed, **stripe_env(stripe_fake))

    details = {p["place"]: p["details"] for p in report["places"]}  # type: ignore[index]
    assert (details["backups"]["removed"], details["store_objects"]["removed"], details["data_key"]["removed"],
            details["memberships"]["removed"]) == (1, 1, 1, 1), details
    assert details["redis"]["removed"] >= 4
    assert all(p["done"] for p in report["places"])  # type: ignore[index]
    await assert_nothing_left(ec_stack, tenant)
    await assert_stripe_erased(ec_stack, stripe_fake, tenant["id"], customer, sub, report)  # type: ignore[arg-type]
    again = await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert again.status_code == 200 and again.json() == report


async def test_an_erasure_asked_with_the_delete_survives_sigkill_before_the_deletes_finish(
        ec_stack: Stack, ec_api: httpx.AsyncClient):
    worker = ec_stack.start_worker()
    try:
        tenant = await active(ec_api, unique_slug("ek"), "Killed Delete", "shared")
    finally:
        stop_process(worker)
    r = await ec_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
    assert r.status_code == 202, r.text

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, "finish", completed)
    assert report["operation_id"] == r.json()["erasure_id"]  # type: ignore[index]
    tombstone = (await ec_api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert (tombstone["status"], tombstone["slug"], tombstone["name"]) == ("deleted", tenant["id"], "")
