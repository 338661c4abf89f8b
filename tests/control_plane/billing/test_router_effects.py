"""What billing events change reaches the routers within a second (the Redis invalidation), seen
through the demo app: a plan bought through Stripe grants its features, a cheaper one withdraws
them, a failed payment answers 402 and its payment lifts it."""

from __future__ import annotations

import time
import uuid

import asyncpg
import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from tests.conftest import create_active_tenant
from tests.control_plane.billing.conftest import NEW_SECRET, deliver, invoice, new_id, stripe_event, subscription
from tests.tenant_router.test_gates import SEEN_WITHIN, host, until


async def test_plan_and_payment_events_reach_the_router_within_a_second(api, tenant_app, stack):
    tenant = await create_active_tenant(api)
    customer, sub = new_id("cus"), new_id("sub")
    pro_price, basic_price = new_id("price"), new_id("price")
    pro, basic = f"pro_{uuid.uuid4().hex[:8]}", f"basic_{uuid.uuid4().hex[:8]}"
    assert (await api.put(f"/v1/plans/{pro}", json={"features": ["analytics_export"]})).status_code in (200, 201)
    assert (await api.put(f"/v1/plans/{basic}", json={"features": []})).status_code in (200, 201)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1", uuid.UUID(tenant["id"]), customer)
        await catalog.execute("UPDATE plans SET stripe_price_ids = ARRAY[$2] WHERE name = $1", pro, pro_price)
        await catalog.execute("UPDATE plans SET stripe_price_ids = ARRAY[$2] WHERE name = $1", basic, basic_price)
    finally:
        await catalog.close()

    export = lambda: tenant_app.get("/api/analytics/export", headers=host(tenant))  # noqa: E731
    projects = lambda: tenant_app.get("/api/projects", headers=host(tenant))  # noqa: E731
    assert (await export()).status_code == 403
    settings = msgspec.structs.replace(stack.settings, stripe_webhook_secret=NEW_SECRET)
    now = int(time.time())
    async with AsyncTestClient(create_app(settings)) as webhooks:
        webhooks.headers["Authorization"] = f"Bearer {settings.admin_token}"  # to wait for the applier
        answer = await deliver(webhooks, stripe_event("customer.subscription.updated",
                                                      subscription(sub, customer, pro_price), created=now - 10))
        assert answer.status_code == 200 and answer.json()["state"] == "applied", answer.text
        assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["plan"] == pro
        response, elapsed = await until(export, 200)
        assert response.status_code == 200 and elapsed < SEEN_WITHIN
        await deliver(webhooks, stripe_event("customer.subscription.updated", subscription(sub, customer, basic_price),
                                             created=now - 5))
        response, elapsed = await until(export, 403)
        assert response.status_code == 403 and elapsed < SEEN_WITHIN

        unpaid = invoice(new_id("in"), customer, period_end=now + 30 * 86400, subscription_id=sub)
        # failed four days ago (delivered late): the three days of grace are over
        await deliver(webhooks, stripe_event("invoice.payment_failed", unpaid, created=now - 4 * 86400))
        response, elapsed = await until(projects, 402)
        assert response.status_code == 402 and elapsed < SEEN_WITHIN
        await deliver(webhooks, stripe_event("invoice.paid", unpaid, created=now - 2))
        response, elapsed = await until(projects, 200)
        assert response.status_code == 200 and elapsed < SEEN_WITHIN
    shown = (await api.get(f"/v1/tenants/{tenant['id']}")).json()
    assert (shown["plan"], shown["billing_status"], shown["stripe_customer_id"]) == (basic, "ok", customer)
    assert shown["paid_until"] is not None and shown["past_due_since"] is None
