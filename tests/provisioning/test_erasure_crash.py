"""SIGKILL the worker at every step boundary of an erasure; a restarted worker finishes it, with
the same report (the counts taken before anything was removed), nothing of the tenant left and
its Stripe customer deleted (its subscription cancelled first). The tenants have KMS keys of their
own (BACKUP_KMS_KEY_PER_TENANT, moto), so the kills around schedule_kms_key_deletion leave a rerun
that schedules the key once, with the date KMS set. And a delete asked with `?erase=true`, killed
before its finish: the restarted worker deletes, then erases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from provisioning.pipelines import ERASE
from tests.conftest import Stack, admin_client, extra_postgres, stop_process, unique_slug
from tests.control_plane.billing.fake_stripe import FakeStripe
from tests.provisioning.test_crash_recovery import kill_at_then_finish
from tests.provisioning.test_erasure import active, assert_nothing_left, offboarded_tenant
from tests.provisioning.test_erasure_kms import (  # noqa: F401 (fixtures: the moto server, its settings)
    assert_scheduled,
    kms,
    kms_env,
    kms_key_of,
    kms_stack_on,
    moto_endpoint,
)
from tests.provisioning.test_erasure_scrub import (
    catalog_tables_holding,
    customer_object,
    person,
    record_events,
    stripe_event,
)
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
async def ec_stack(erase_crash_pg, redis_server, kms_env) -> Stack:  # noqa: F811
    return await kms_stack_on(erase_crash_pg, redis_server.url, "catalog_erase_crash")


@pytest.fixture(scope="module")
async def ec_api(ec_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(ec_stack) as client:
        yield client


@pytest.mark.parametrize("step", ERASE_BOUNDARIES)
async def test_erasure_survives_sigkill_at(step: str, ec_stack: Stack, ec_api: httpx.AsyncClient,
                                           kms_env: dict[str, str], kms: Any,  # noqa: F811
                                           stripe_fake: FakeStripe):  # noqa: F811
    worker = ec_stack.start_worker(**kms_env)
    try:
        tenant = await offboarded_tenant(ec_stack, ec_api, "dedicated")
    finally:
        stop_process(worker)
    key_id = await kms_key_of(ec_stack, tenant["id"])
    # the delete's cancellation round has not run (this API has no Stripe key): the erasure cancels
    customer, sub = await give_stripe_customer(ec_stack, stripe_fake, tenant["id"])
    # an event linked to no tenant that names the customer (found by the id the Stripe step forgets)
    payer = person()
    await record_events(ec_stack, stripe_event("customer.updated", customer_object(customer, payer)))
    assert (await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, step, completed, **kms_env, **stripe_env(stripe_fake))

    details = {p["place"]: p["details"] for p in report["places"]}  # type: ignore[index]
    assert (details["backups"]["removed"], details["store_objects"]["removed"], details["data_key"]["removed"],
            details["memberships"]["removed"]) == (1, 1, 1, 1), details
    assert details["redis"]["removed"] >= 4
    assert details["data_key"]["kms_key_id"] == key_id
    assert_scheduled(details["data_key"]["kms_deletion_date"], kms, key_id)
    assert all(p["done"] for p in report["places"])  # type: ignore[index]
    await assert_nothing_left(ec_stack, tenant)
    assert details["billing_records"]["billing_events_scrubbed"] == 1, details
    assert await catalog_tables_holding(ec_stack, payer["email"]) == []
    await assert_stripe_erased(ec_stack, stripe_fake, tenant["id"], customer, sub, report)  # type: ignore[arg-type]
    again = await ec_api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert again.status_code == 200 and again.json() == report


async def test_an_erasure_asked_with_the_delete_survives_sigkill_before_the_deletes_finish(
        ec_stack: Stack, ec_api: httpx.AsyncClient, kms_env: dict[str, str]):  # noqa: F811
    worker = ec_stack.start_worker(**kms_env)
    try:
        tenant = await active(ec_api, unique_slug("ek"), "Killed Delete", "shared")
    finally:
        stop_process(worker)
    r = await ec_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
    assert r.status_code == 202, r.text

    async def completed() -> dict | None:
        report = (await ec_api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        return report if report["status"] == "completed" else None

    report = await kill_at_then_finish(ec_stack, "finish", completed, **kms_env)
    assert report["operation_id"] == r.json()["erasure_id"]  # type: ignore[index]
    tombstone = (await ec_api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert (tombstone["status"], tombstone["slug"], tombstone["name"]) == ("deleted", tenant["id"], "")
