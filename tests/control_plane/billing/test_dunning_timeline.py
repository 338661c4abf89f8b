"""The dunning timeline with injected clocks, seen through the demo app: a failed payment leaves the
tenant working for BILLING_GRACE_DAYS with a Billing-Status header on every answer, then 402; the
workers' billing round suspends it BILLING_SUSPEND_AFTER_DAYS after the failure (a one-step
suspend operation); invoice.paid resumes it and it answers 200 again."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from provisioning import dunning
from tenant_router.runtime import router_of
from tests.conftest import create_active_tenant
from tests.control_plane.billing.conftest import NEW_SECRET, deliver, invoice, new_id, stripe_event
from tests.tenant_router.test_gates import host, until

DAY = 86400


async def test_grace_then_402_then_suspended_and_a_payment_restores(api, tenant_app, stack):
    tenant = await create_active_tenant(api)
    tenant_id, customer = uuid.UUID(tenant["id"]), new_id("cus")
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    router = router_of(tenant_app.app)
    settings = msgspec.structs.replace(stack.settings, stripe_webhook_secret=NEW_SECRET)
    config = settings.worker_config()
    projects = lambda: tenant_app.get("/api/projects", headers=host(tenant))  # noqa: E731
    try:
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1", tenant_id, customer)
        failed_at = int(time.time()) - 10
        unpaid = invoice(new_id("in"), customer, period_end=failed_at + 30 * DAY)
        async with AsyncTestClient(create_app(settings)) as webhooks:
            webhooks.headers["Authorization"] = f"Bearer {settings.admin_token}"  # to wait for the applier
            assert (await deliver(webhooks, stripe_event("invoice.payment_failed", unpaid,
                                                         created=failed_at))).status_code == 200
            shown = (await api.get(f"/v1/tenants/{tenant_id}")).json()
            assert shown["billing_status"] == "past_due"
            grace_until = dt.datetime.fromisoformat(shown["billing_grace_until"])
            assert grace_until == dt.datetime.fromtimestamp(failed_at + 3 * DAY, dt.UTC)

            # day 0: working, every answer says until when
            response = await projects()
            assert response.status_code == 200
            expected = grace_until.isoformat().replace("+00:00", "Z")
            assert response.headers["Billing-Status"] == f'past_due; grace-until="{expected}"'

            # day 4: the grace is over (no invalidation needed: the placement carries the time)
            router.clock = lambda: time.time() + 4 * DAY
            response = await projects()
            assert response.status_code == 402 and response.json()["code"] == "payment_required"

            # day 13: not yet suspended; day 15: suspended by the workers' round
            await dunning.run_round(catalog, config, None, None, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=13))
            assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "active"
            router.clock = lambda: time.time() + 15 * DAY
            await dunning.run_round(catalog, config, router.redis,
                                    None, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=15))
            assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "suspended"
            response, _ = await until(projects, 403)
            assert response.json()["code"] == "tenant_suspended"
            ops = (await api.get(f"/v1/tenants/{tenant_id}/operations")).json()["items"]
            assert ops[0]["kind"] == "suspend_tenant" and ops[0]["state"] == "succeeded"
            assert [s["name"] for s in ops[0]["steps"]] == ["set_status"]
            # a second round finds nothing more to do
            await dunning.run_round(catalog, config, None, None, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=16))
            assert len((await api.get(f"/v1/tenants/{tenant_id}/operations")).json()["items"]) == len(ops)

            # paid: resumed, 200 without the header
            answer = await deliver(webhooks, stripe_event("invoice.paid", unpaid, created=int(time.time())))
            assert answer.json()["state"] == "applied"
            response, _ = await until(projects, 200)
            assert response.status_code == 200 and "Billing-Status" not in response.headers
        shown = (await api.get(f"/v1/tenants/{tenant_id}")).json()
        assert (shown["status"], shown["billing_status"], shown["billing_grace_until"]) == ("active", "ok", None)
        ops = (await api.get(f"/v1/tenants/{tenant_id}/operations")).json()["items"]
        assert ops[0]["kind"] == "resume_tenant"
        audit = await catalog.fetchval("SELECT count(*) FROM audit_log WHERE target_id = $1 "
                                       "AND action = 'billing.dunning_suspend'", str(tenant_id))
        assert audit == 1
    finally:
        router.clock = time.time
        await catalog.close()


async def test_an_admin_suspension_is_not_lifted_by_a_payment(api, stack):
    tenant = await create_active_tenant(api)
    tenant_id, customer = uuid.UUID(tenant["id"]), new_id("cus")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1", tenant_id, customer)
    finally:
        await catalog.close()
    assert (await api.patch(f"/v1/tenants/{tenant_id}", json={"status": "suspended"})).status_code == 200
    settings = msgspec.structs.replace(stack.settings, stripe_webhook_secret=NEW_SECRET)
    now = int(time.time())
    async with AsyncTestClient(create_app(settings)) as webhooks:
        webhooks.headers["Authorization"] = f"Bearer {settings.admin_token}"  # to wait for the applier
        paid = invoice(new_id("in"), customer, period_end=now + 30 * DAY)
        assert (await deliver(webhooks, stripe_event("invoice.paid", paid, created=now))).json()["state"] == "applied"
    assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "suspended"


async def test_a_tenant_set_past_due_by_hand_gets_no_grace(api, tenant_app):
    tenant = await create_active_tenant(api)
    assert (await api.put(f"/v1/tenants/{tenant['id']}/billing", json={"billing_status": "past_due"})).status_code == 200
    response, _ = await until(lambda: tenant_app.get("/api/projects", headers=host(tenant)), 402)
    assert response.status_code == 402 and "Billing-Status" not in response.headers
