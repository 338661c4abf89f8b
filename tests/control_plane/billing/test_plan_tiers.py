"""Plans that decide a tier: a subscription moved onto the enterprise plan (tier dedicated) queues a
move and the tenant ends on a dedicated database with its data; leaving it for a plan without a
tier moves it back (the plan's tier_on_leave). With another operation open, the move is left
pending and the workers' billing round queues it once the tenant is idle."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from provisioning import dunning
from tests.conftest import unique_slug, wait_for
from tests.control_plane.billing.conftest import (
    NEW_SECRET,
    deliver,
    make_tenant,
    new_id,
    stripe_event,
    subscription,
)
from tests.tenant_router.test_gates import host


async def _operation_done(api, operation_id: str) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        op = (await api.get(f"/v1/operations/{operation_id}?wait=20")).json()
        if op["state"] in ("succeeded", "failed"):
            return op
    raise AssertionError(f"operation {operation_id} did not end")


async def test_plans_accept_prices_and_tiers_and_refuse_bad_ones(api):
    name = f"ent_{uuid.uuid4().hex[:8]}"
    price = new_id("price")
    answer = await api.put(f"/v1/plans/{name}", json={"features": [], "stripe_price_ids": [price, price],
                                                      "tier": "dedicated", "tier_on_leave": "shared"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["stripe_price_ids"], answer.json()["tier"], answer.json()["tier_on_leave"]) == (
        [price], "dedicated", "shared")
    for body in ({"tier": "gold"}, {"stripe_price_ids": ["price_x\n"]}, {"stripe_price_ids": ["cus_123"]},
                 {"tier_on_leave": 3}):
        refused = await api.put(f"/v1/plans/{name}", json=body)
        assert refused.status_code == 422 and refused.json()["code"] == "validation_failed", refused.text


async def test_an_enterprise_subscription_moves_the_tenant_to_a_dedicated_database_and_back(api, tenant_app, stack):
    created = await api.post("/v1/tenants", json={"slug": unique_slug("ent"), "name": "Ent", "tier": "shared"})
    tenant = await wait_for(api, created.json()["tenant"]["id"], "active")
    assert (await tenant_app.post("/api/projects", headers=host(tenant), json={"name": "kept"})).status_code == 201
    enterprise, basic = f"ent_{uuid.uuid4().hex[:8]}", f"basic_{uuid.uuid4().hex[:8]}"
    ent_price, basic_price, customer, sub = new_id("price"), new_id("price"), new_id("cus"), new_id("sub")
    assert (await api.put(f"/v1/plans/{enterprise}", json={
        "stripe_price_ids": [ent_price], "tier": "dedicated", "tier_on_leave": "shared"})).status_code == 200
    assert (await api.put(f"/v1/plans/{basic}", json={"stripe_price_ids": [basic_price]})).status_code == 200
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1", uuid.UUID(tenant["id"]), customer)
    finally:
        await catalog.close()
    settings = msgspec.structs.replace(stack.settings, stripe_webhook_secret=NEW_SECRET)
    now = int(time.time())
    async with AsyncTestClient(create_app(settings)) as webhooks:
        webhooks.headers["Authorization"] = f"Bearer {settings.admin_token}"  # to wait for the applier
        answer = await deliver(webhooks, stripe_event("customer.subscription.updated",
                                                      subscription(sub, customer, ent_price), created=now - 5))
        assert answer.json()["state"] == "applied"
        events = (await api.get("/v1/billing/events?state=applied")).json()["items"]
        move = next(e for e in events if e["id"] == answer.json()["event_id"])["effect"]["move"]
        assert move["tier"] == "dedicated"
        assert (await _operation_done(api, move["operation_id"]))["state"] == "succeeded"
        shown = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
        assert (shown["tier"], shown["plan"]) == ("dedicated", enterprise)
        projects = (await tenant_app.get("/api/projects", headers=host(tenant))).json()
        assert [p["name"] for p in projects] == ["kept"]

        # leaving it for a plan without a tier: back to the tier_on_leave, one more operation
        events_before = len((await api.get(f"/v1/tenants/{tenant['id']}/operations")).json()["items"])
        answer = await deliver(webhooks, stripe_event("customer.subscription.updated",
                                                      subscription(sub, customer, basic_price), created=now - 1))
        move = next(e for e in (await api.get("/v1/billing/events?state=applied")).json()["items"]
                    if e["id"] == answer.json()["event_id"])["effect"]["move"]
        assert move["tier"] == "shared"
        assert (await _operation_done(api, move["operation_id"]))["state"] == "succeeded"
        assert len((await api.get(f"/v1/tenants/{tenant['id']}/operations")).json()["items"]) == events_before + 1
    shown = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert (shown["tier"], shown["plan"]) == ("shared", basic)
    assert [p["name"] for p in (await tenant_app.get("/api/projects", headers=host(tenant))).json()] == ["kept"]


async def test_a_tier_move_asked_for_during_another_operation_is_queued_later(billing_api, catalog):
    price, customer, sub = new_id("price"), new_id("cus"), new_id("sub")
    plan = f"ent_{uuid.uuid4().hex[:8]}"
    assert (await billing_api.put(f"/v1/plans/{plan}", json={"stripe_price_ids": [price],
                                                            "tier": "dedicated"})).status_code == 200
    tenant_id = await make_tenant(catalog, customer=customer)
    busy = uuid.uuid4()  # no worker serves this catalog: the operation stays open
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state) VALUES ($1, 'migrate_tenant', $2, 'queued')",
                          busy, tenant_id)
    answer = await deliver(billing_api, stripe_event("customer.subscription.updated", subscription(sub, customer, price)))
    assert answer.json()["state"] == "applied"
    row = await catalog.fetchrow("SELECT plan, pending_tier FROM tenants WHERE id = $1", tenant_id)
    assert (row["plan"], row["pending_tier"]) == (plan, "dedicated")
    assert await dunning.queue_pending_tiers(catalog) == []  # still busy
    await catalog.execute("UPDATE operations SET state = 'succeeded', finished_at = now() WHERE id = $1", busy)
    assert await dunning.queue_pending_tiers(catalog) == [tenant_id]
    queued = await catalog.fetchrow("SELECT kind, params->>'tier' AS tier FROM operations "
                                    "WHERE tenant_id = $1 AND state = 'queued'", tenant_id)
    assert (queued["kind"], queued["tier"]) == ("move_tenant", "dedicated")
    assert await catalog.fetchval("SELECT pending_tier FROM tenants WHERE id = $1", tenant_id) is None
    assert await dunning.queue_pending_tiers(catalog) == []


async def test_a_stripe_price_belongs_to_one_plan_even_when_two_plans_claim_it_at_once(billing_api):
    price, names = new_id("price"), [f"p_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    first = await billing_api.put(f"/v1/plans/{names[0]}", json={"stripe_price_ids": [price]})
    assert first.status_code == 200, first.text
    again = await billing_api.put(f"/v1/plans/{names[0]}", json={"stripe_price_ids": [price], "features": ["xx"]})
    assert again.status_code == 200, again.text  # the plan that sells it may be written again
    taken = await billing_api.put(f"/v1/plans/{names[1]}", json={"stripe_price_ids": [new_id("price"), price]})
    assert taken.status_code == 409 and taken.json()["code"] == "stripe_price_taken", taken.text
    assert taken.json()["plan"] == names[0]
    assert (await billing_api.get(f"/v1/plans/{names[1]}")).status_code == 404  # nothing written
    shared = new_id("price")
    racing = [f"r_{uuid.uuid4().hex[:10]}" for _ in range(4)]
    answers = await asyncio.gather(*(billing_api.put(f"/v1/plans/{n}", json={"stripe_price_ids": [shared]})
                                     for n in racing))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
