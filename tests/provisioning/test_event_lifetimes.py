"""How long a lifecycle event lives: delivery gives up on one still undelivered after its window
(`abandoned`, counted, never posted again unless redelivered, which opens a new window); the webhook
takes only the types it was given; retention deletes old events in batches, never one still waiting
for the webhook. A real receiver on a free port, a real catalog; ages are set in the past."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from provisioning import events, outbox, queue, retention
from provisioning.config import WorkerConfig
from provisioning.metrics import WorkerMetrics
from tests.conftest import fresh_catalog
from tests.provisioning.test_outbox import Receiver, receiver  # noqa: F401 (the receiver fixture)

SECRET = "events_" + "k9Xq2LmZ7vB4nR8tW1yH5jC3pD6sF0gA"
HOUR = 3600.0


@pytest.fixture(scope="module")
async def lifetimes_catalog(pg) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(await fresh_catalog(pg, "catalog_event_lifetimes"), min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def catalog(lifetimes_catalog: asyncpg.Pool) -> asyncpg.Pool:
    """The module's catalog with no event in it (one migrated catalog for all: each test starts clean)."""
    await lifetimes_catalog.execute("DELETE FROM tenant_events")
    return lifetimes_catalog


async def _event(catalog: asyncpg.Pool, kind: str = "suspend_tenant", *, age_hours: float = 0) -> int:
    """An event of `kind`'s type, `age_hours` old (occurred and pending since then)."""
    tenant_id, op_id = uuid.uuid4(), uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'n', 'shared', "
                          "'suspended')", tenant_id, f"l{uuid.uuid4().hex[:12]}")
    await queue.record_done(catalog, op_id, kind, tenant_id, "set_status")
    return await catalog.fetchval(
        "UPDATE tenant_events SET occurred_at = now() - make_interval(secs => $2), "
        "pending_since = now() - make_interval(secs => $2) WHERE operation_id = $1 RETURNING id",
        op_id, age_hours * HOUR)


async def _state(catalog: asyncpg.Pool, event_id: int) -> str | None:
    return await events.delivery_state(catalog, event_id)


def _config(**kw) -> WorkerConfig:
    return WorkerConfig(catalog_dsn="postgresql://unused/x", secret_key="k" * 32, **kw)


@pytest.mark.parametrize("receiver", [100], indirect=True)  # the receiver never answers 2xx
async def test_an_event_past_its_window_is_abandoned_counted_and_not_posted(catalog, receiver):  # noqa: F811
    old = await _event(catalog, age_hours=73)
    young = await _event(catalog, age_hours=71)
    metrics = WorkerMetrics()
    delivery = outbox.EventDelivery(catalog, receiver.url, SECRET, give_up_seconds=72 * HOUR, lease_seconds=0,
                                    on_abandoned=metrics.events_abandoned.inc)
    try:
        assert await delivery.deliver_due() == (0, 1)  # the young one tried (and failed); the old given up
        assert await delivery.deliver_due() == (0, 0)
    finally:
        await delivery.aclose()
    assert (await _state(catalog, old), await _state(catalog, young)) == ("abandoned", "pending")
    assert [int(h[outbox.DELIVERY_HEADER]) for h, _ in receiver.received] == [young]
    assert metrics.registry.get_sample_value("tenantplane_worker_events_abandoned_total") == 1
    listed = await events.page(catalog, after=None, before=None, type_=None, tenant_id=None, limit=10,
                               state="abandoned")
    assert [(e.event.id, e.delivery.state, e.delivery.attempts) for e in listed] == [(old, "abandoned", 0)]
    assert listed[0].delivery.abandoned_at is not None and listed[0].delivery.delivered_at is None


async def test_a_failing_event_is_given_up_at_its_first_due_attempt_after_the_window(catalog, receiver):  # noqa: F811
    event_id = await _event(catalog)
    delivery = outbox.EventDelivery(catalog, receiver.url, SECRET, give_up_seconds=HOUR, lease_seconds=0,
                                    retry_base_seconds=0.01)
    try:
        assert await delivery.deliver_due() == (0, 1)
        # it has been failing for an hour and its next attempt is due: given up, not posted
        await catalog.execute("UPDATE tenant_events SET pending_since = now() - interval '61 minutes', "
                              "next_attempt_at = now() WHERE id = $1", event_id)
        assert await delivery.deliver_due() == (0, 0)
    finally:
        await delivery.aclose()
    row = await catalog.fetchrow("SELECT attempts, last_error, abandoned_at FROM tenant_events WHERE id = $1", event_id)
    assert (row["attempts"], row["last_error"]) == (1, "HTTP 500") and row["abandoned_at"] is not None
    assert len(receiver.received) == 1


async def test_a_leased_event_is_not_given_up_while_its_post_may_be_answered(catalog, receiver):  # noqa: F811
    event_id = await _event(catalog, age_hours=100)
    await catalog.execute("UPDATE tenant_events SET next_attempt_at = now() + interval '1 minute' WHERE id = $1",
                          event_id)  # claimed by a worker now posting it
    delivery = outbox.EventDelivery(catalog, receiver.url, SECRET, give_up_seconds=HOUR)
    try:
        assert await delivery.abandon_overdue() == 0
        assert await _state(catalog, event_id) == "pending"
        await catalog.execute(events.DELIVERED, event_id)  # its 2xx
    finally:
        await delivery.aclose()
    assert await _state(catalog, event_id) == "delivered"


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_a_redelivered_event_is_sent_once_more_with_a_new_window(catalog, receiver):  # noqa: F811
    event_id = await _event(catalog, age_hours=80)
    delivery = outbox.EventDelivery(catalog, receiver.url, SECRET, give_up_seconds=72 * HOUR, lease_seconds=0)
    try:
        assert await delivery.deliver_due() == (0, 0)
        assert await _state(catalog, event_id) == "abandoned"
        assert await events.redeliver(catalog, event_id + 1000) is None  # no such event
        again = await events.redeliver(catalog, event_id)
        assert again is not None
        listed, attempts_before = again
        assert (listed.delivery.state, listed.delivery.attempts, attempts_before) == ("pending", 0, 0)
        assert listed.delivery.abandoned_at is None
        assert await events.redeliver(catalog, event_id) is None  # pending already: nothing to redeliver
        assert await delivery.deliver_due() == (1, 0)
        assert await events.redeliver(catalog, event_id) is None  # delivered: nothing to redeliver
    finally:
        await delivery.aclose()
    assert await _state(catalog, event_id) == "delivered"
    assert [int(h[outbox.DELIVERY_HEADER]) for h, _ in receiver.received] == [event_id]


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_the_webhook_gets_only_its_types_and_others_are_not_given_up(catalog, receiver):  # noqa: F811
    created = await _event(catalog, "create_tenant")
    suspended = await _event(catalog, "suspend_tenant")
    old_suspended = await _event(catalog, "suspend_tenant", age_hours=100)
    delivery = outbox.EventDelivery(catalog, receiver.url, SECRET, types=("tenant.created",),
                                    give_up_seconds=HOUR, lease_seconds=0)
    try:
        assert await delivery.deliver_due() == (1, 0)
        assert await delivery.deliver_due() == (0, 0)
    finally:
        await delivery.aclose()
    assert [int(h[outbox.DELIVERY_HEADER]) for h, _ in receiver.received] == [created]
    # a type the webhook does not take is never sent, so never given up either
    assert (await _state(catalog, suspended), await _state(catalog, old_suspended)) == ("pending", "pending")


async def test_retention_deletes_old_settled_events_in_batches_and_keeps_waiting_ones(catalog):
    delivered = [await _event(catalog, age_hours=24 * 100 + i) for i in range(3)]
    await catalog.execute("UPDATE tenant_events SET delivered_at = now() WHERE id = ANY($1)", delivered)
    abandoned = await _event(catalog, age_hours=24 * 95)
    await catalog.execute("UPDATE tenant_events SET abandoned_at = now() WHERE id = $1", abandoned)
    waiting = await _event(catalog, age_hours=24 * 100)  # old, undelivered, not given up: kept
    other_type = await _event(catalog, "create_tenant", age_hours=24 * 100)  # a type the webhook does not take
    young = await _event(catalog, age_hours=24 * 10)
    await catalog.execute("UPDATE tenant_events SET delivered_at = now() WHERE id = $1", young)
    hooked = {"events_webhook_url": "http://127.0.0.1:9/x", "events_webhook_secret": SECRET,
              "events_webhook_types": ("tenant.suspended",), "operation_retention_days": 0,
              "audit_retention_days": 0, "report_retention_days": 0}

    pruned = await retention.prune_once(_config(retention_batch_size=2, **hooked), catalog)

    assert pruned == retention.Pruned(events=5)
    left = {r["id"] for r in await catalog.fetch("SELECT id FROM tenant_events")}
    assert left == {waiting, young}
    assert not {*delivered, abandoned, other_type} & left
    # 0 keeps every event; without a webhook no event waits for one, so the old pending one goes
    assert await retention.prune_once(_config(events_keep_days=0, **hooked), catalog) == retention.Pruned()
    assert await retention.prune_once(_config(), catalog) == retention.Pruned(events=1)
    assert {r["id"] for r in await catalog.fetch("SELECT id FROM tenant_events")} == {young}


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_the_workers_duty_takes_its_types_and_window_from_the_config(catalog, receiver):  # noqa: F811
    created = await _event(catalog, "create_tenant")
    old_created = await _event(catalog, "create_tenant", age_hours=3)
    suspended = await _event(catalog, "suspend_tenant")
    config = _config(events_webhook_url=receiver.url, events_webhook_secret=SECRET, events_interval_seconds=0.05,
                     events_webhook_types=("tenant.created",), events_give_up_after_hours=2)
    abandoned: list[int] = []
    duty = asyncio.create_task(outbox.deliver_events_periodically(config, catalog, on_abandoned=abandoned.append))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while await _state(catalog, created) != "delivered" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        duty.cancel()
        await asyncio.gather(duty, return_exceptions=True)
    assert [await _state(catalog, e) for e in (created, old_created, suspended)] == ["delivered", "abandoned",
                                                                                     "pending"]
    assert abandoned == [1]
    assert [int(h[outbox.DELIVERY_HEADER]) for h, _ in receiver.received] == [created]
