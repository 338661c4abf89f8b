"""Lifecycle events posted to a real HTTP receiver on a free port by the outbox the dunning notices
use: signed (HMAC-SHA256 over "t.body"), retried with backoff after failures, one delivery id on
every attempt, recorded delivered once."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from examples.events_receiver import verify_signature
from provisioning import events, outbox, queue
from tests.conftest import fresh_catalog
from tests.provisioning.test_outbox import Receiver, receiver  # noqa: F401 (the receiver fixture)

SECRET = "events_" + "k9Xq2LmZ7vB4nR8tW1yH5jC3pD6sF0gA"


def verify(headers: dict[str, str], body: bytes, secret: str = SECRET) -> None:
    """What a receiver does (examples/events_receiver.py)."""
    assert verify_signature(headers[outbox.SIGNATURE_HEADER], body, secret)
    assert not verify_signature(headers[outbox.SIGNATURE_HEADER], body + b" ", secret)
    assert not verify_signature(headers[outbox.SIGNATURE_HEADER], body, secret + "x")


@pytest.fixture(scope="module")
async def events_catalog(pg) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(await fresh_catalog(pg, "catalog_event_delivery"), min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


async def _suspended(catalog: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID, str]:
    tenant_id, op_id, slug = uuid.uuid4(), uuid.uuid4(), f"e{uuid.uuid4().hex[:12]}"
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'Secret Name Ltd', "
                          "'shared', 'suspended')", tenant_id, slug)
    await queue.record_done(catalog, op_id, "suspend_tenant", tenant_id, "set_status")
    return tenant_id, op_id, slug


async def test_an_event_failing_twice_is_retried_then_delivered_once(events_catalog, receiver):  # noqa: F811
    tenant_id, op_id, slug = await _suspended(events_catalog)
    event_id = await events_catalog.fetchval("SELECT id FROM tenant_events WHERE operation_id = $1", op_id)
    delivery = outbox.EventDelivery(events_catalog, receiver.url, SECRET, retry_base_seconds=0.2, lease_seconds=0)
    try:
        assert await delivery.deliver_due() == (0, 1)
        assert await delivery.deliver_due() == (0, 0)  # not due before its backoff
        await asyncio.sleep(0.25)
        assert await delivery.deliver_due() == (0, 1)
        await asyncio.sleep(0.45)
        assert await delivery.deliver_due() == (1, 0)
        await asyncio.sleep(0.3)
        assert await delivery.deliver_due() == (0, 0)  # delivered events are never sent again
    finally:
        await delivery.aclose()
    row = await events_catalog.fetchrow("SELECT * FROM tenant_events WHERE id = $1", event_id)
    assert row["delivered_at"] is not None and row["attempts"] == 3 and row["last_error"] is None
    assert len(receiver.received) == 3
    for attempt, (headers, body) in enumerate(receiver.received, start=1):
        verify(headers, body)
        got = json.loads(body)
        assert headers[outbox.DELIVERY_HEADER] == str(event_id) == str(got["id"])
        assert (got["type"], got["tenant_id"], got["operation_id"], got["attempt"]) == (
            "tenant.suspended", str(tenant_id), str(op_id), attempt)
        assert got["data"] == {"slug": slug, "tier": "shared"}  # not placed yet: no server
        assert "Secret Name" not in body.decode()  # the tenant's name is not in an event
        assert set(got) == {"id", "type", "tenant_id", "operation_id", "occurred_at", "data", "attempt"}


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_two_workers_never_post_the_same_event_at_once(events_catalog, receiver):  # noqa: F811
    await events_catalog.execute("UPDATE tenant_events SET delivered_at = now() WHERE delivered_at IS NULL")
    made = [await _suspended(events_catalog) for _ in range(6)]
    one = outbox.EventDelivery(events_catalog, receiver.url, SECRET, lease_seconds=30)
    two = outbox.EventDelivery(events_catalog, receiver.url, SECRET, lease_seconds=30)
    try:
        results = await asyncio.gather(one.deliver_due(), two.deliver_due(), one.deliver_due(), two.deliver_due())
    finally:
        await one.aclose()
        await two.aclose()
    assert sum(d for d, _ in results) == 6
    ids = [json.loads(body)["operation_id"] for _, body in receiver.received]
    assert sorted(ids) == sorted(str(op_id) for _, op_id, _ in made)  # each once


@pytest.mark.parametrize("receiver", [100], indirect=True)
async def test_errors_never_name_the_url_or_the_secret(events_catalog, receiver, caplog):  # noqa: F811
    await events_catalog.execute("UPDATE tenant_events SET delivered_at = now() WHERE delivered_at IS NULL")
    _, op_id, _ = await _suspended(events_catalog)
    delivery = outbox.EventDelivery(events_catalog, receiver.url, SECRET, lease_seconds=0)
    try:
        assert await delivery.deliver_due() == (0, 1)
    finally:
        await delivery.aclose()
    error = await events_catalog.fetchval("SELECT last_error FROM tenant_events WHERE operation_id = $1", op_id)
    assert error == "HTTP 500"
    assert "s3cr3t" not in caplog.text and SECRET not in caplog.text


def test_the_example_receiver_refuses_old_and_malformed_signatures():
    body = b'{"id": 1}'
    header = outbox.sign(body, SECRET, timestamp=1_000_000)
    assert verify_signature(header, body, SECRET, now=1_000_100)
    assert not verify_signature(header, body, SECRET, now=1_000_000 + 301)  # a replay
    for bad in (None, "", "t=abc,v1=00", "v1=00", header.replace("v1=", "v0=")):
        assert not verify_signature(bad, body, SECRET, now=1_000_000)


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_an_event_claimed_by_a_worker_that_died_is_sent_after_the_lease(events_catalog, receiver):  # noqa: F811
    await events_catalog.execute("UPDATE tenant_events SET delivered_at = now() WHERE delivered_at IS NULL")
    _, op_id, _ = await _suspended(events_catalog)
    # a worker claimed the event (and maybe posted it), then died before recording anything
    await events_catalog.fetch(outbox.EVENTS.claim, outbox.BATCH, 0.5, list(events.EVENT_TYPES), 3600.0)
    delivery = outbox.EventDelivery(events_catalog, receiver.url, SECRET, timeout=0.5, lease_seconds=0.5)
    try:
        assert await delivery.deliver_due() == (0, 0)  # still leased to the dead worker
        await asyncio.sleep(0.6)
        assert await delivery.deliver_due() == (1, 0)
    finally:
        await delivery.aclose()
    row = await events_catalog.fetchrow("SELECT attempts, delivered_at FROM tenant_events WHERE operation_id = $1", op_id)
    assert row["attempts"] == 2 and row["delivered_at"] is not None
    assert [(json.loads(body)["operation_id"], json.loads(body)["attempt"]) for _, body in receiver.received] == [
        (str(op_id), 2)]
