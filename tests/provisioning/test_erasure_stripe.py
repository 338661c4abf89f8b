"""Erasure's Stripe step against localstripe (behind the billing tests' front server): the worker,
given STRIPE_API_KEY, cancels the tenant's subscription and deletes its customer, with idempotency
keys committed first; `DELETE /v1/tenants/{id}?erase=true` deletes then erases in one request, and
the erasure starts when the delete ends even when the API that took the request is gone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from tests.conftest import Stack, admin_client, make_stack, stop_process, unique_slug, wait_for
from tests.control_plane.billing.conftest import API_KEY, new_id
from tests.control_plane.billing.fake_stripe import FakeStripe
from tests.control_plane.billing.test_sync import _subscribe
from tests.provisioning.test_erasure import active, erased


@pytest.fixture(scope="module")
def stripe_fake() -> Iterator[FakeStripe]:
    server = FakeStripe()
    try:
        yield server
    finally:
        server.stop()


def stripe_env(fake: FakeStripe) -> dict[str, str]:
    """What a worker needs to call the fake Stripe (the API of these tests runs without a key, so
    only the erasure step, never the delete's cancellation round, calls Stripe)."""
    return {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": fake.url}


async def give_stripe_customer(stack: Stack, fake: FakeStripe, tenant_id: str) -> tuple[str, str]:
    """A customer with a live subscription at localstripe, recorded on the tenant as checkout would."""
    customer = fake.backend("POST", "/v1/customers", API_KEY, {"name": "Erase Me", "metadata[tenant_id]": tenant_id})
    sub = _subscribe(fake, customer["id"], new_id("price"))
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2, stripe_subscription_id = $3 "
                              "WHERE id = $1::uuid", tenant_id, customer["id"], sub)
    finally:
        await catalog.close()
    return customer["id"], sub


async def assert_stripe_erased(stack: Stack, fake: FakeStripe, tenant_id: str, customer: str, sub: str,
                               report: dict) -> None:
    entry = {p["place"]: p for p in report["places"]}["stripe_customer"]
    assert entry["done"] and entry["details"]["state"] == "deleted" and entry["details"]["removed"] is True, entry
    assert "retrievable by its id" in entry["details"]["remains"]
    assert fake.backend("GET", f"/v1/subscriptions/{sub}", API_KEY)["status"] == "canceled"
    with pytest.raises(AssertionError, match="404"):  # localstripe forgets it (Stripe keeps it, marked deleted)
        fake.backend("GET", f"/v1/customers/{customer}", API_KEY)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        row = await catalog.fetchrow("SELECT stripe_customer_id, stripe_subscription_id FROM tenants WHERE id = $1::uuid",
                                     tenant_id)
        assert (row["stripe_customer_id"], row["stripe_subscription_id"]) == (None, None)
        keys = await catalog.fetch("SELECT purpose, completed_at FROM billing_idempotency_keys WHERE purpose = ANY($1)",
                                   [f"cancel:{sub}", f"delete_customer:{customer}"])
        assert sorted(k["purpose"] for k in keys if k["completed_at"] is not None) == sorted(
            [f"cancel:{sub}", f"delete_customer:{customer}"]), keys
    finally:
        await catalog.close()


@pytest.fixture(scope="module")
async def es_stack(pg, redis_server) -> Stack:
    return await make_stack(pg, redis_server.url, "catalog_erase_stripe")


@pytest.fixture(scope="module")
async def es_api(es_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(es_stack) as client:
        yield client


async def _completed(stack: Stack, tenant_id: str, timeout: float = 90) -> None:
    """Watched in the catalog itself: no API needs to be up for the erasure to run."""
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        deadline = time.monotonic() + timeout
        while await catalog.fetchval("SELECT completed_at FROM tenant_erasures WHERE tenant_id = $1::uuid",
                                     tenant_id) is None:
            assert time.monotonic() < deadline, "the erasure did not complete"
            await asyncio.sleep(0.2)
    finally:
        await catalog.close()


async def test_delete_with_erase_deletes_then_erases_and_the_stripe_customer_goes(
        es_stack: Stack, es_api: httpx.AsyncClient, stripe_fake: FakeStripe):
    worker = es_stack.start_worker(**stripe_env(stripe_fake))
    try:
        tenant = await active(es_api, unique_slug("es"), "Stripe Erase", "shared")
        customer, sub = await give_stripe_customer(es_stack, stripe_fake, tenant["id"])
        r = await es_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
        assert r.status_code == 202, r.text
        answer = r.json()
        assert answer["tenant"]["status"] == "deleting" and answer["erasure_id"] != answer["operation_id"]
        again = await es_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
        assert again.status_code == 202 and again.json()["erasure_id"] == answer["erasure_id"]
        report = await erased(es_api, tenant["id"])
    finally:
        stop_process(worker)

    assert report["operation_id"] == answer["erasure_id"]
    op = (await es_api.get(f"/v1/operations/{answer['erasure_id']}")).json()
    assert (op["kind"], op["state"]) == ("erase_tenant", "succeeded")
    assert all(p["done"] for p in report["places"]), report
    await assert_stripe_erased(es_stack, stripe_fake, tenant["id"], customer, sub, report)
    # one DELETE each at Stripe: the subscription, then the customer
    assert [s.method for s in stripe_fake.seen(f"/v1/customers/{customer}")] == ["DELETE"]
    assert [s.method for s in stripe_fake.seen(f"/v1/subscriptions/{sub}")] == ["DELETE"]
    assert (await es_api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 200
    # the request retried after it all ended: the same delete and erasure, nothing new
    retried = await es_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
    assert retried.status_code == 202, retried.text
    assert (retried.json()["operation_id"], retried.json()["erasure_id"]) == (answer["operation_id"],
                                                                            answer["erasure_id"])
    assert (await es_api.delete(f"/v1/tenants/{tenant['id']}")).status_code == 404  # deleted: without erase


async def test_delete_with_erase_of_a_tenant_deleted_before_erases_it(es_stack: Stack, es_api: httpx.AsyncClient):
    worker = es_stack.start_worker()
    try:
        tenant = await active(es_api, unique_slug("ed"), "Deleted Before", "shared")
        deleted = await es_api.delete(f"/v1/tenants/{tenant['id']}")
        assert deleted.status_code == 202 and "erasure_id" not in deleted.json(), deleted.text
        await wait_for(es_api, tenant["id"], "deleted")
        r = await es_api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "true"})
        assert r.status_code == 202, r.text
        assert r.json()["operation_id"] == deleted.json()["operation_id"]
        report = await erased(es_api, tenant["id"])
    finally:
        stop_process(worker)
    assert report["operation_id"] == r.json()["erasure_id"]
    by_slug = await es_api.delete(f"/v1/tenants/{tenant['slug']}", params={"erase": "true"})
    assert by_slug.status_code == 404  # a deleted tenant is found by its id only


async def test_the_erasure_asked_with_a_delete_starts_when_the_api_is_gone(es_stack: Stack, stripe_fake: FakeStripe):
    async with admin_client(es_stack) as api:  # no worker yet: the delete waits in the queue
        tenant = await active_with_worker(es_stack, api)
        r = await api.delete(f"/v1/tenants/{tenant['id']}", params={"erase": "1"})
        assert r.status_code == 202, r.text
        erasure_id = r.json()["erasure_id"]
        pending = (await api.get(f"/v1/tenants/{tenant['id']}/erasure")).json()
        assert (pending["status"], pending["operation_id"]) == ("requested", erasure_id)
    # the API is gone; a worker alone deletes, then erases
    worker = es_stack.start_worker(**stripe_env(stripe_fake))
    try:
        await _completed(es_stack, tenant["id"])
    finally:
        stop_process(worker)
    catalog = await asyncpg.connect(es_stack.catalog_dsn)
    try:
        kinds = await catalog.fetch("SELECT kind, state FROM operations WHERE tenant_id = $1::uuid ORDER BY created_at",
                                    tenant["id"])
        assert [(k["kind"], k["state"]) for k in kinds][-2:] == [("delete_tenant", "succeeded"),
                                                                 ("erase_tenant", "succeeded")]
        place = await catalog.fetchval("SELECT places->'stripe_customer'->>'state' FROM tenant_erasures "
                                       "WHERE tenant_id = $1::uuid", tenant["id"])
        assert place == "none"  # it never had a customer
    finally:
        await catalog.close()


async def active_with_worker(stack: Stack, api: httpx.AsyncClient) -> dict:
    worker = stack.start_worker()
    try:
        return await active(api, unique_slug("eg"), "Gone API", "shared")
    finally:
        stop_process(worker)


async def test_delete_with_erase_refuses_what_it_cannot_do(es_api: httpx.AsyncClient):
    bad = await es_api.delete(f"/v1/tenants/{uuid.uuid4()}", params={"erase": "perhaps"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_failed", bad.text
    missing = await es_api.delete(f"/v1/tenants/{uuid.uuid4()}", params={"erase": "true"})
    assert missing.status_code == 404 and missing.json()["code"] == "tenant_not_found"
    schema = (await es_api.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1/tenants/{key}"]["delete"]
    assert "erase" in [p["name"] for p in operation["parameters"]]
    assert {"404", "409", "422"} <= set(operation["responses"])
    assert "erasure_id" in str(schema["components"]["schemas"]).replace("'", "")
