"""Lifecycle events are written by the statement that ends their operation: a tenant's create,
suspend, resume, move and delete give their events in that order, once each, with the tenant's
slug, tier and server and nothing secret; a billing suspension names its reason; a restore and a
clone report theirs, a backup none."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import asyncpg
import httpx

from provisioning import dunning, events, queue
from provisioning.steps.catalog import KEEP_STATUS
from tests.conftest import Stack, unique_slug, wait_for
from tests.provisioning.test_backup_restore import create_tenant, restore, take_backup
from tests.provisioning.test_clones import clone
from tests.provisioning.test_moves import move


async def tenant_events(stack: Stack, tenant_id: str) -> list[events.Event]:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        listed = await events.page(conn, after=None, before=None, type_=None, tenant_id=uuid.UUID(tenant_id),
                                   limit=100)
        return [e.event for e in reversed(listed)]
    finally:
        await conn.close()


async def wait_events(stack: Stack, tenant_id: str, count: int, timeout: float = 60) -> list[events.Event]:
    deadline = time.monotonic() + timeout
    while len(found := await tenant_events(stack, tenant_id)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return found


async def live_tenant_lifecycle(api: httpx.AsyncClient, tier: str = "dedicated") -> dict:
    """create, suspend, resume, move to the schema tier, delete; the tenant as created."""
    r = await api.post("/v1/tenants", json={"slug": unique_slug("ev"), "name": "Evented", "tier": tier})
    assert r.status_code == 202, r.text
    tenant = await wait_for(api, r.json()["tenant"]["id"], "active")
    for status in ("suspended", "active"):
        assert (await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": status})).status_code == 200
    await move(api, tenant, "schema")
    assert (await api.delete(f"/v1/tenants/{tenant['id']}")).status_code == 202
    await wait_for(api, tenant["id"], "deleted")
    return tenant


async def test_a_lifecycle_gives_its_events_in_order_once_each(api, stack: Stack):
    tenant = await live_tenant_lifecycle(api)
    found = await wait_events(stack, tenant["id"], 5)
    assert [e.type for e in found] == ["tenant.created", "tenant.suspended", "tenant.resumed", "tenant.moved",
                                       "tenant.deleted"]
    assert [e.id for e in found] == sorted(e.id for e in found)
    assert len({e.operation_id for e in found}) == 5
    ops = {op["id"]: op["kind"] for op in (await api.get(f"/v1/tenants/{tenant['id']}/operations")).json()["items"]}
    assert [ops[str(e.operation_id)] for e in found] == ["create_tenant", "suspend_tenant", "resume_tenant",
                                                         "move_tenant", "delete_tenant"]
    created, suspended, _, moved, deleted = found
    assert created.data == {"slug": tenant["slug"], "tier": "dedicated", "server": "local"}
    assert suspended.data == {"slug": tenant["slug"], "tier": "dedicated", "server": "local"}
    assert moved.data == {"slug": tenant["slug"], "tier": "schema", "server": "local",
                          "from": {"tier": "dedicated", "server": "local"}}
    assert deleted.data == {"slug": tenant["slug"], "tier": "schema", "server": "local"}  # where it was
    assert all(e.tenant_id == uuid.UUID(tenant["id"]) for e in found)
    assert all(created.occurred_at <= e.occurred_at for e in found)


async def test_no_event_for_operations_that_report_none(api, stack: Stack):
    r = await api.post("/v1/tenants", json={"slug": unique_slug("ev"), "name": "Quiet", "tier": "shared"})
    tenant = await wait_for(api, r.json()["tenant"]["id"], "active")
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        # an operation of a kind that reports no event
        await queue.record_done(conn, uuid.uuid4(), "rename_tenant", uuid.UUID(tenant["id"]), "set_name")
        # the same operation ended twice (a rerun of its end) is still one event
        op_id = uuid.uuid4()
        await queue.record_done(conn, op_id, "suspend_tenant", uuid.UUID(tenant["id"]), "set_status",
                                {"reason": "payment_overdue"})
        await conn.execute(queue.finished_statement(KEEP_STATUS),
                           op_id, 0, uuid.UUID(tenant["id"]))
    finally:
        await conn.close()
    found = await tenant_events(stack, tenant["id"])
    assert [e.type for e in found] == ["tenant.created", "tenant.suspended"]
    assert found[1].data == {"slug": tenant["slug"], "tier": "shared", "server": "local", "reason": "payment_overdue"}


async def test_a_restore_and_a_clone_give_their_events_and_a_backup_none(api, stack: Stack):
    tenant = await create_tenant(api, "schema")
    backup = await take_backup(api, tenant["id"])
    assert (await restore(api, tenant["id"], backup["id"]))["state"] == "succeeded"
    found = await wait_events(stack, tenant["id"], 2)
    assert [e.type for e in found] == ["tenant.created", "tenant.restored"]  # the backup reported nothing
    assert found[1].data == {"slug": tenant["slug"], "tier": "schema", "server": "local"}
    made, op = await clone(api, backup["id"], "shared")
    assert op["state"] == "succeeded", op
    cloned = await wait_events(stack, made["id"], 1)
    assert [(e.type, e.data) for e in cloned] == [
        ("tenant.created", {"slug": made["slug"], "tier": "shared", "server": "local", "source": "backup"})]


async def test_billing_suspending_an_overdue_tenant_reports_it_with_the_reason(api, stack: Stack):
    tenant = await create_tenant(api, "shared")
    pool = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        # a clock of its own, so that no other test's past-due tenant is old enough to be suspended
        await pool.execute("UPDATE tenants SET billing_status = 'past_due', past_due_since = '2000-01-01T00:00:00Z' "
                           "WHERE id = $1", uuid.UUID(tenant["id"]))
        now = dt.datetime(2000, 1, 15, 0, 0, 1, tzinfo=dt.UTC)
        assert uuid.UUID(tenant["id"]) in await dunning.suspend_overdue(pool, 14, now)
    finally:
        await pool.close()
    found = await tenant_events(stack, tenant["id"])
    assert [(e.type, e.data.get("reason")) for e in found] == [("tenant.created", None),
                                                               ("tenant.suspended", "payment_overdue")]


async def test_a_status_change_rolled_back_leaves_no_event(api, stack: Stack):
    tenant = await create_tenant(api, "shared")
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await queue.record_done(conn, uuid.uuid4(), "suspend_tenant", uuid.UUID(tenant["id"]), "set_status")
        assert [e.type for e in await tenant_events(stack, tenant["id"])] == ["tenant.created"]  # not yet committed
        await tx.rollback()
    finally:
        await conn.close()
    assert [e.type for e in await tenant_events(stack, tenant["id"])] == ["tenant.created"]
