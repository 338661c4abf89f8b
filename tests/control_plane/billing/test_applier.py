"""The webhook records, the workers apply: Stripe's answer does not wait on the effect, a worker
process is woken by the recorder's NOTIFY within moments, an apply interrupted at any point (the
event recorded with no worker running, or the worker SIGKILLed inside the apply's transaction) is
done once by the next worker, and the appliers of several workers take turns."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from contracts import locks
from control_plane.api.app import create_app
from control_plane.settings import Settings, SettingsError
from tests.conftest import SECRET_KEY, catalog_pool, stop_process
from tests.control_plane.billing.conftest import (
    applied_state,
    checkout_completed,
    deliver,
    make_tenant,
    new_id,
    stripe_event,
    tenant_row,
    worker_applier,
)

ROOT = Path(__file__).resolve().parents[3]
WOKEN_WITHIN = 1.0  # seconds; the applier's fallback interval is 5 s


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


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    """`tenantctl worker` on this catalog, as production runs it (BILLING_APPLY_IN unset: worker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANTPLANE_TEST_", "BILLING_APPLY_IN"))}
    env.update({"CATALOG_DATABASE_URL": settings.catalog_database_url, "SECRET_KEY": settings.secret_key,
                "REDIS_URL": settings.redis_url or "", "BACKUP_SCHEDULE": "off", "BACKUP_DRILL_INTERVAL": "0",
                "PYTHONPATH": str(ROOT)})
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "control_plane.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


async def _listening(catalog, proc: subprocess.Popen, log: Path) -> None:
    """Until the worker's wake-up listener LISTENs on the billing channel."""
    for _ in range(400):
        assert proc.poll() is None, log.read_text()[-3000:]
        if await catalog.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                  " AND query LIKE 'LISTEN %tenantplane_billing_events%'"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never listened for billing events:\n" + log.read_text()[-3000:])


def _own(billing_settings: Settings, pg, name: str, **changes) -> Settings:
    return msgspec.structs.replace(billing_settings, catalog_database_url=pg.dsn(name), **changes)


async def test_an_event_the_api_records_is_applied_by_a_worker_process_within_moments(billing_settings, pg, tmp_path):
    async with catalog_pool(pg, "catalog_billing_wake") as catalog:
        settings = _own(billing_settings, pg, "catalog_billing_wake")
        worker = _start_worker(settings, tmp_path / "worker.log")
        try:
            await _listening(catalog, worker, tmp_path / "worker.log")
            async with AsyncTestClient(create_app(settings)) as api:
                api.headers["Authorization"] = f"Bearer {settings.admin_token}"
                assert api.app.state.billing.applier is None  # the API only records
                # three events spaced wider than a wake's delay: the 5 s interval could serve one of
                # them in time, never all three
                for _ in range(3):
                    tenant_id, customer = await make_tenant(catalog), new_id("cus")
                    event = stripe_event("checkout.session.completed",
                                         checkout_completed(tenant_id, customer, new_id("sub")))
                    started = time.monotonic()
                    assert (await deliver(api, event, wait=False)).json()["state"] == "received"
                    assert await applied_state(api, event["id"], timeout=10) == "applied"
                    took = time.monotonic() - started
                    assert took < WOKEN_WITHIN, f"applied {took:.2f} s after it was recorded"
                    assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer
                    await asyncio.sleep(1.5)
        finally:
            stop_process(worker)


async def _kill_inside_apply(settings: Settings, catalog, tenant_id, log: Path) -> None:
    """Start a worker, let its applier reach the locked tenant row, SIGKILL it there."""
    async with catalog.acquire() as holder:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        proc = _start_worker(settings, log)
        try:
            for _ in range(600):  # until it waits for the tenant's row inside its transaction
                assert proc.poll() is None, log.read_text()[-3000:]
                if await catalog.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                          " AND datname = current_database()"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the worker's applier never reached the tenant's row")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await lock.rollback()


async def test_sigkill_before_and_inside_the_apply_then_the_next_worker_applies_once(billing_settings, pg, tmp_path):
    # a catalog of its own, so that no other applier takes the event meanwhile
    async with catalog_pool(pg, "catalog_billing_applier") as catalog:
        settings = _own(billing_settings, pg, "catalog_billing_applier")
        tenant_id, customer = await make_tenant(catalog), new_id("cus")
        event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, new_id("sub")))
        async with AsyncTestClient(create_app(settings)) as api:  # records, with no worker running
            assert (await deliver(api, event, wait=False)).json()["state"] == "received"
            await asyncio.sleep(0.3)
        # no worker yet: the event is recorded and nothing applied
        assert await catalog.fetchval("SELECT state FROM billing_events WHERE id = $1", event["id"]) == "received"
        await _kill_inside_apply(settings, catalog, tenant_id, tmp_path / "killed.log")
        row = await catalog.fetchrow("SELECT state, deliveries FROM billing_events WHERE id = $1", event["id"])
        assert (row["state"], row["deliveries"]) == ("received", 1)  # its transaction rolled back whole
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] is None
        worker = _start_worker(settings, tmp_path / "next.log")  # the next worker's first round applies it
        try:
            async with AsyncTestClient(create_app(settings)) as api:
                api.headers["Authorization"] = f"Bearer {settings.admin_token}"
                assert await applied_state(api, event["id"]) == "applied"
        finally:
            stop_process(worker)
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer
        assert await catalog.fetchval("SELECT count(*) FROM audit_log WHERE details->>'event_id' = $1",
                                      event["id"]) == 1


async def test_appliers_take_turns_and_one_holding_the_turn_leaves_the_others_idle(billing_settings, pg):
    async with catalog_pool(pg, "catalog_billing_turns") as catalog:
        settings = _own(billing_settings, pg, "catalog_billing_turns")
        tenant_id, customer = await make_tenant(catalog), new_id("cus")
        event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, new_id("sub")))
        async with AsyncTestClient(create_app(settings)) as api:
            assert (await deliver(api, event, wait=False)).json()["state"] == "received"
        state = lambda: catalog.fetchval("SELECT state FROM billing_events WHERE id = $1", event["id"])  # noqa: E731
        async with catalog.acquire() as holder:
            turn = holder.transaction()  # another applier's turn, held from before this one starts
            await turn.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1, 0)", locks.BILLING_APPLIER)
            async with worker_applier(settings) as other:
                assert await other.events.apply_next() is None
                await asyncio.sleep(0.3)  # the running duty's first round left it too
                assert await state() == "received"
                await turn.rollback()
                other.applier.wake()  # the turn's holder would have drained it; here the wake does
                for _ in range(100):
                    if await state() != "received":
                        break
                    await asyncio.sleep(0.05)
        assert await state() == "applied"


async def test_with_billing_apply_in_api_the_api_applies_without_a_worker(billing_settings, pg):
    async with catalog_pool(pg, "catalog_billing_in_api") as catalog:
        settings = _own(billing_settings, pg, "catalog_billing_in_api", billing_apply_in="api")
        tenant_id, customer = await make_tenant(catalog), new_id("cus")
        event = stripe_event("checkout.session.completed", checkout_completed(tenant_id, customer, new_id("sub")))
        async with AsyncTestClient(create_app(settings)) as api:
            api.headers["Authorization"] = f"Bearer {settings.admin_token}"
            assert (await deliver(api, event)).json()["state"] == "applied"
        assert (await tenant_row(catalog, tenant_id))["stripe_customer_id"] == customer


def test_billing_apply_in_names_worker_or_api():
    with pytest.raises(SettingsError, match="BILLING_APPLY_IN"):
        Settings.from_env({"BILLING_APPLY_IN": "router"}, catalog_database_url="postgresql://x/y",
                          secret_key=SECRET_KEY)
