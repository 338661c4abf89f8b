"""Dunning notices delivered to a real HTTP receiver on a free port: signed (HMAC-SHA256 over
"t.body", Stripe's scheme), retried with backoff after failures, recorded delivered exactly once;
a row whose worker died after claiming it is sent again after the lease, with the same id."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import secrets
import threading
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from provisioning import outbox
from tests.conftest import fresh_catalog

SECRET = "dunning_" + secrets.token_urlsafe(32)


class Receiver(http.server.ThreadingHTTPServer):
    """Answers the first `failures` posts with 500, then 200; keeps what it got."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/dunning?token=s3cr3t"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        status = 500 if len(self.server.received) <= self.server.failures else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver(request) -> Iterator[Receiver]:
    server = Receiver(getattr(request, "param", 2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def outbox_catalog(pg) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(await fresh_catalog(pg, "catalog_outbox"), min_size=1, max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


async def _notice(catalog: asyncpg.Pool) -> tuple[uuid.UUID, int]:
    tenant_id = uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', 'shared', 'active')",
                          tenant_id, f"o{tenant_id.hex[:12]}")
    row_id = await catalog.fetchval(
        "INSERT INTO dunning_outbox (tenant_id, event_id, kind, payload) VALUES ($1, $2, 'payment_failed', $3) RETURNING id",
        tenant_id, f"evt_{tenant_id.hex}", json.dumps({"invoice": "in_123"}))
    return tenant_id, row_id


def _verify(headers: dict[str, str], body: bytes) -> None:
    parts = dict(item.split("=", 1) for item in headers[outbox.SIGNATURE_HEADER].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


async def _row(catalog: asyncpg.Pool, row_id: int) -> asyncpg.Record:
    return await catalog.fetchrow("SELECT * FROM dunning_outbox WHERE id = $1", row_id)


async def test_failures_are_retried_with_backoff_then_delivered_once(outbox_catalog, receiver):
    tenant_id, row_id = await _notice(outbox_catalog)
    delivery = outbox.DunningDelivery(outbox_catalog, receiver.url, SECRET, retry_base_seconds=0.2, lease_seconds=0)
    try:
        assert await delivery.deliver_due() == (0, 1)
        first = await _row(outbox_catalog, row_id)
        assert first["attempts"] == 1 and first["last_error"] == "HTTP 500" and first["delivered_at"] is None
        assert await delivery.deliver_due() == (0, 0)  # not due before its backoff
        await asyncio.sleep(0.25)
        assert await delivery.deliver_due() == (0, 1)
        second = await _row(outbox_catalog, row_id)
        assert (second["next_attempt_at"] - second["created_at"]).total_seconds() >= 0.6  # 0.2 s, then 0.4 s
        await asyncio.sleep(0.45)
        assert await delivery.deliver_due() == (1, 0)
        await asyncio.sleep(0.3)
        assert await delivery.deliver_due() == (0, 0)  # delivered rows are never sent again
    finally:
        await delivery.aclose()
    done = await _row(outbox_catalog, row_id)
    assert done["delivered_at"] is not None and done["attempts"] == 3 and done["last_error"] is None
    assert len(receiver.received) == 3
    for attempt, (headers, body) in enumerate(receiver.received, start=1):
        _verify(headers, body)
        notice = json.loads(body)
        assert headers["Tenantplane-Delivery"] == str(row_id) and notice["id"] == row_id
        assert (notice["type"], notice["tenant_id"], notice["attempt"]) == ("dunning.payment_failed", str(tenant_id), attempt)
        assert notice["data"] == {"invoice": "in_123"}


@pytest.mark.parametrize("receiver", [0], indirect=True)
async def test_a_row_claimed_by_a_worker_that_died_is_sent_after_the_lease(outbox_catalog, receiver):
    _, row_id = await _notice(outbox_catalog)
    # a worker claimed the row (and maybe posted it), then died before recording anything
    await outbox_catalog.fetch(outbox._CLAIM, outbox.BATCH, 0.5)
    delivery = outbox.DunningDelivery(outbox_catalog, receiver.url, SECRET, timeout=0.5, lease_seconds=0.5)
    try:
        assert await delivery.deliver_due() == (0, 0)  # still leased to the dead worker
        await asyncio.sleep(0.6)
        assert await delivery.deliver_due() == (1, 0)
    finally:
        await delivery.aclose()
    assert (await _row(outbox_catalog, row_id))["attempts"] == 2
    assert [json.loads(body)["id"] for _, body in receiver.received] == [row_id]


@pytest.mark.parametrize("receiver", [100], indirect=True)
async def test_errors_never_name_the_url(outbox_catalog, receiver, caplog):
    _, row_id = await _notice(outbox_catalog)
    delivery = outbox.DunningDelivery(outbox_catalog, receiver.url, SECRET, lease_seconds=0)
    try:
        await delivery.deliver_due()
    finally:
        await delivery.aclose()
    assert "s3cr3t" not in caplog.text and SECRET not in caplog.text
    assert "s3cr3t" not in (await _row(outbox_catalog, row_id))["last_error"]
