"""What the erasure scrubs beyond the tenant's own rows: the recorded Stripe events that carried its
customer's email, name and address (also those parked without a tenant), its dunning notices and
the announcement outbox rows naming its slug and domains; and what a plain delete purges from
Redis: the rate limiter's windows, right after the delete."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import asyncpg
import httpx

from contracts.channels import rate_limit_key_pattern
from control_plane.billing.recorder import EventRecorder
from provisioning import announcement_outbox
from provisioning.announcements import redis_client
from tenant_router.ratelimit import TenantRateLimiter
from tests.conftest import Stack, unique_slug, wait_for
from tests.provisioning.test_erasure import active, assert_nothing_left, erased, offboarded_tenant

STUB_KEYS = {"id", "type", "erased"}


def stripe_event(type_: str, obj: dict) -> dict:
    """A Stripe event as Stripe posts it (the shape the webhook records)."""
    return {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "api_version": "2025-03-31.basil", "type": type_,
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "data": {"object": obj}}


def person() -> dict:
    tag = uuid.uuid4().hex[:10]
    return {"email": f"payer-{tag}@example.org", "name": f"Payer {tag}", "line1": f"{tag} Erasure Street"}


def customer_object(customer: str, who: dict, tenant_id: str | None = None) -> dict:
    return {"id": customer, "object": "customer", "email": who["email"], "name": who["name"],
            "address": {"line1": who["line1"], "city": "Lyon", "country": "FR"},
            "metadata": {"tenant_id": tenant_id} if tenant_id else {}}


async def record_events(stack: Stack, *events: dict) -> None:
    """Through the webhook's recorder (its one INSERT): the worker's applier applies them meanwhile."""
    recorder = EventRecorder(stack.catalog_dsn, connect_timeout=5, statement_timeout=5)
    try:
        for e in events:
            await recorder.record(e["id"], e["type"], dt.datetime.fromtimestamp(e["created"], dt.UTC), json.dumps(e))
    finally:
        await recorder.close()


async def catalog_tables_holding(stack: Stack, needle: str) -> list[str]:
    """Every catalog table whose rows' text (every text and jsonb column) holds `needle`."""
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return [t for t in tables
                if await conn.fetchval(f'SELECT count(*) FROM "{t}" r WHERE strpos(r::text, $1) > 0', needle)]
    finally:
        await conn.close()


async def test_erasure_scrubs_billing_events_notices_and_outbox_rows(stack: Stack, api: httpx.AsyncClient):
    tenant = await offboarded_tenant(stack, api, "shared")
    tid, customer = tenant["id"], f"cus_{uuid.uuid4().hex[:14]}"
    payer, other = person(), person()
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        # the deleted tenant's Stripe customer (the Stripe step has no key in this suite: it stays
        # linked, so its events are found by the tenant row as well as by the inventory's note)
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1::uuid", tid, customer)
        invoice = stripe_event("invoice.payment_failed", {
            "id": f"in_{uuid.uuid4().hex[:14]}", "object": "invoice", "customer": customer,
            "customer_email": payer["email"], "customer_name": payer["name"],
            "customer_address": {"line1": payer["line1"]}, "period_end": int(time.time()) + 86400})
        # not an event we act on: ignored, linked to no tenant, found by its customer id only
        updated = stripe_event("customer.updated", customer_object(customer, payer))
        # names the tenant (metadata) and another customer, with the person's details
        checkout = stripe_event("checkout.session.completed", {
            "id": f"cs_{uuid.uuid4().hex[:14]}", "object": "checkout.session", "client_reference_id": tid,
            "customer": f"cus_{uuid.uuid4().hex[:14]}", "subscription": None,
            "customer_details": {"email": payer["email"], "name": payer["name"], "address": {"line1": payer["line1"]}}})
        bystander = stripe_event("customer.updated", customer_object(f"cus_{uuid.uuid4().hex[:14]}", other))
        await record_events(stack, invoice, updated, checkout, bystander)
        await catalog.execute("INSERT INTO dunning_outbox (tenant_id, event_id, kind, payload) "
                              "VALUES ($1::uuid, $2, 'payment_failed', $3::jsonb)", tid, invoice["id"],
                              json.dumps({"invoice": invoice["data"]["object"]["id"], "past_due_since": None}))
        # an announcement noted by a change whose process has not sent it yet (a grace of 10 minutes)
        noted = await announcement_outbox.note(catalog, [(tid, (("slug", tenant["slug"]), ("domain", tenant["domain"])))],
                                               grace=600)
        assert set(await catalog_tables_holding(stack, payer["email"])) == {"billing_events"}

        assert (await api.post(f"/v1/tenants/{tid}/erasure")).status_code == 202
        report = await erased(api, tid)

        places = {p["place"]: p for p in report["places"]}
        billing = places["billing_records"]
        assert billing["done"], billing
        assert {k: billing["details"][k] for k in ("billing_events_scrubbed", "dunning_notices_removed",
                                                  "announcements_without_aliases")} == {
            "billing_events_scrubbed": 3, "dunning_notices_removed": 1, "announcements_without_aliases": 1}
        assert payer["email"] not in json.dumps(report) and customer not in json.dumps(report)
        # the inventory's note of the customer (for this step) is gone with it
        assert not await catalog.fetchval("SELECT params ? 'stripe_customer_id' FROM operations WHERE id = $1::uuid",
                                          report["operation_id"])
        for needle in (payer["email"], payer["name"], payer["line1"], tenant["slug"], tenant["domain"]):
            assert await catalog_tables_holding(stack, needle) == [], needle
        rows = {r["id"]: r for r in await catalog.fetch(
            "SELECT id, type, created, state, payload::text AS payload FROM billing_events WHERE id = ANY($1)",
            [invoice["id"], updated["id"], checkout["id"], bystander["id"]])}
        for e in (invoice, updated, checkout):
            row = rows[e["id"]]
            assert json.loads(row["payload"]) == {"id": e["id"], "type": e["type"], "erased": True}
            assert row["type"] == e["type"] and int(row["created"].timestamp()) == e["created"]
            assert row["state"] != "received"
        assert json.loads(rows[bystander["id"]]["payload"]) == bystander  # another customer's: untouched
        left = await catalog.fetch("SELECT tenant_id, aliases::text AS aliases FROM announcement_outbox WHERE id = ANY($1)",
                                   noted)
        assert [(str(r["tenant_id"]), r["aliases"]) for r in left] == [(tid, "[]")]  # still drops the placement
        await assert_nothing_left(stack, tenant)
        again = await api.post(f"/v1/tenants/{tid}/erasure")
        assert again.status_code == 200 and again.json() == report
    finally:
        await catalog.execute("DELETE FROM announcement_outbox WHERE tenant_id = $1::uuid", tid)
        await catalog.close()


async def _windows(stack: Stack, tenant_id: str) -> list[bytes]:
    redis = redis_client(stack.settings.redis_url)
    try:
        return [k async for k in redis.scan_iter(match=rate_limit_key_pattern(tenant_id), count=1000)]
    finally:
        await redis.aclose()


async def test_delete_purges_the_rate_limit_windows(stack: Stack, api: httpx.AsyncClient):
    tenant = await active(api, unique_slug("rl"), "Rate Limited", "shared")
    bystander = await active(api, unique_slug("rb"), "Still Counted", "shared")
    limiter = TenantRateLimiter(stack.settings.redis_url)
    for tid, per_minute in ((tenant["id"], 60), (tenant["id"], 600), (bystander["id"], 60)):
        assert (await limiter.hit(uuid.UUID(tid), per_minute)) is not None
    assert len(await _windows(stack, tenant["id"])) == 2  # one window per limit (a plan change starts afresh)

    assert (await api.delete(f"/v1/tenants/{tenant['id']}")).status_code == 202
    await wait_for(api, tenant["id"], "deleted")

    assert await _windows(stack, tenant["id"]) == []
    assert len(await _windows(stack, bystander["id"])) == 1
    report = (await api.post("/v1/reconciliation")).json()
    assert [f for f in report["findings"] if f["tenant_id"] == tenant["id"]] == []


async def test_a_delete_without_windows_has_nothing_to_purge(stack: Stack, api: httpx.AsyncClient):
    tenant = await active(api, unique_slug("rn"), "Never Limited", "shared")
    deleted = await api.delete(f"/v1/tenants/{tenant['id']}")
    assert deleted.status_code == 202
    await wait_for(api, tenant["id"], "deleted")
    op = (await api.get(f"/v1/operations/{deleted.json()['operation_id']}")).json()
    assert op["state"] == "succeeded" and [s["name"] for s in op["steps"]][-1] == "purge_rate_limits", op
