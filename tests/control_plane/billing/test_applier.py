"""The webhook records, the applier applies: Stripe's answer does not wait on the effect, and an
apply interrupted at any point (the process killed before it, or inside its transaction) is done
once by the next round."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
from litestar.testing import AsyncTestClient

from control_plane.api.app import create_app
from tests.conftest import catalog_pool
from tests.control_plane.billing.conftest import (
    applied_state,
    checkout_completed,
    deliver,
    make_tenant,
    new_id,
    stripe_event,
    tenant_row,
)

ROOT = Path(__file__).resolve().parents[3]


async def test_the_webhook_answers_while_the_tenant_is_locked_and_the_effect_follows(billing_api, catalog):
    tenant_id, customer = await make_tenant(catalog), new_id("cus")
    event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, new_id("sub")))
    async with catalog.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)  # the apply must wait
        started = time.monotonic()
        answer = await deliver(billing_api, event, wait=False)
        assert answer.status_code == 200 and answer.json()["state"] == "received", answer.text
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.3)
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
        await lock.rollback()
    assert await applied_state(billing_api, event["id"]) == "applied"
    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer
    again = await deliver(billing_api, event, wait=False)
    assert again.json() | {"received": True} == {"received": True, "event_id": event["id"], "state": "applied",
                                                   "duplicate": True}


async def _kill_inside_apply(dsn: str, catalog, tenant_id) -> None:
    """Start an applier process, let it reach the locked tenant row, SIGKILL it there."""
    async with catalog.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        proc = subprocess.Popen([sys.executable, "-m", "tests.control_plane.billing.apply_client", dsn],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        try:
            for _ in range(300):  # until it waits for the tenant's row inside its transaction
                if await catalog.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                          " AND datname = current_database()"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the applier never reached the tenant's row")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await lock.rollback()


async def test_sigkill_before_and_inside_the_apply_then_the_next_round_applies_once(billing_settings, pg):
    # a catalog of its own, so that no other API process applies the event meanwhile
    async with catalog_pool(pg, "catalog_billing_applier") as catalog:
        settings = msgspec.structs.replace(billing_settings, catalog_database_url=pg.dsn("catalog_billing_applier"))
        tenant_id, customer = await make_tenant(catalog), new_id("cus")
        event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, new_id("sub")))
        async with catalog.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
            async with AsyncTestClient(create_app(settings)) as api:  # records; stopped while its round waits
                assert (await deliver(api, event, wait=False)).json()["state"] == "received"
                await asyncio.sleep(0.3)
        # killed before applying: the API stopped with the event recorded and nothing applied
        assert await catalog.fetchval("SELECT state FROM billing_events WHERE id = $1", event["id"]) == "received"
        await _kill_inside_apply(settings.catalog_database_url, catalog, tenant_id)
        row = await catalog.fetchrow("SELECT state, deliveries FROM billing_events WHERE id = $1", event["id"])
        assert (row["state"], row["deliveries"]) == ("received", 1)  # its transaction rolled back whole
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
        async with AsyncTestClient(create_app(settings)) as api:  # the next start's round applies it
            api.headers["Authorization"] = f"Bearer {settings.admin_token}"
            assert await applied_state(api, event["id"]) == "applied"
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer
        assert await catalog.fetchval("SELECT count(*) FROM audit_log WHERE details->>'event_id' = $1",
                                      event["id"]) == 1
