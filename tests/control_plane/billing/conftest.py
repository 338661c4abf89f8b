"""Billing's test servers: the fake Stripe API (localstripe behind our front server) and the
control-plane API served over real HTTP by uvicorn on a free port, with a catalog of its own,
beside the billing event applier as the workers run it (in this loop, woken by the recorder's
NOTIFY; a whole worker would also run the operations that some tests need left open).
Webhooks are signed the way Stripe documents it and posted to that API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from control_plane.billing.worker_side import WorkerApplier
from control_plane.embedded import EmbeddedPostgres, EmbeddedRedis
from control_plane.settings import Settings
from tests.conftest import SECRET_KEY, fresh_catalog
from tests.control_plane.billing.fake_stripe import FakeStripe

OLD_SECRET = "whsec_old_" + "a" * 24
NEW_SECRET = "whsec_new_" + "b" * 24
API_KEY = "sk_test_" + "c" * 24


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def billing_settings(pg: EmbeddedPostgres, redis_server: EmbeddedRedis, fake_stripe: FakeStripe) -> Settings:
    return Settings.from_env(
        {}, catalog_database_url=await fresh_catalog(pg, "catalog_billing"), secret_key=SECRET_KEY,
        redis_url=redis_server.url, admin_token="tpa_" + secrets.token_urlsafe(24),
        stripe_api_key=API_KEY, stripe_api_base=fake_stripe.url,
        stripe_webhook_secret=f"{OLD_SECRET}, {NEW_SECRET}")


class HttpApi(msgspec.Struct):
    url: str
    settings: Settings


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def worker_applier(settings: Settings) -> AsyncIterator[WorkerApplier]:
    """The worker's billing applier in this loop: its duty running, woken on the NOTIFY channel
    as the worker's listener wakes it (provisioning/worker.py)."""
    billing = WorkerApplier(settings)
    listener = await asyncpg.connect(settings.catalog_database_url)
    for channel, wake in billing.wakes.items():
        await listener.add_listener(channel, lambda *_, wake=wake: wake())
    task = asyncio.create_task(billing.run())
    try:
        yield billing
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.close()
        await billing.close()


@pytest.fixture(scope="session")
async def billing_applier(billing_settings: Settings) -> AsyncIterator[WorkerApplier]:
    assert billing_settings.billing_apply_in == "worker"  # the API only records
    async with worker_applier(billing_settings) as billing:
        yield billing


@pytest.fixture(scope="session")
async def billing_http(billing_settings: Settings, billing_applier: WorkerApplier) -> AsyncIterator[HttpApi]:
    """The control-plane API over HTTP (uvicorn in this process, on a port the kernel picked)."""
    from control_plane.api.app import create_app

    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(create_app(billing_settings), log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        await asyncio.sleep(0.05)
    try:
        yield HttpApi(url=f"http://127.0.0.1:{sock.getsockname()[1]}", settings=billing_settings)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="session")
async def billing_api(billing_http: HttpApi) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of that API (the webhook route ignores its token)."""
    async with httpx.AsyncClient(base_url=billing_http.url, timeout=30, headers={
            "Authorization": f"Bearer {billing_http.settings.admin_token}"}) as client:
        yield client


@pytest.fixture(scope="session")
async def catalog(billing_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(billing_settings.catalog_database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


# --- tenants and plans written straight into the catalog: billing needs rows, not databases ---


async def make_tenant(catalog: asyncpg.Pool, *, customer: str | None = None, status: str = "active",
                      plan: str | None = None) -> uuid.UUID:
    tenant_id = uuid.uuid4()
    await catalog.execute(
        "INSERT INTO tenants (id, slug, name, tier, status, plan, stripe_customer_id)"
        " VALUES ($1, $2, 'Billing test', 'shared', $3, $4, $5)",
        tenant_id, f"b{tenant_id.hex[:12]}", status, plan, customer)
    return tenant_id


async def make_plan(catalog: asyncpg.Pool, *prices: str, features: tuple[str, ...] = ()) -> str:
    name = f"plan_{uuid.uuid4().hex[:10]}"
    await catalog.execute("INSERT INTO plans (name, features, stripe_price_ids) VALUES ($1, $2, $3)",
                          name, list(features), list(prices))
    return name


async def tenant_row(catalog: asyncpg.Pool, tenant_id: uuid.UUID) -> asyncpg.Record:
    return await catalog.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# --- Stripe events, and signing them as Stripe does ---


def stripe_event(type_: str, obj: dict[str, Any], *, created: int | None = None,
                 event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or new_id("evt"), "object": "event", "api_version": "2025-03-31.basil",
            "type": type_, "created": int(time.time()) if created is None else created, "livemode": False,
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
            "data": {"object": obj}}


def sign(payload: bytes, secret: str = NEW_SECRET, timestamp: int | None = None) -> str:
    """Stripe's documented scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload" with the secret>."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, indent=2).encode()  # Stripe sends indented JSON


async def deliver(client: httpx.AsyncClient, event: dict[str, Any], *, secret: str = NEW_SECRET,
                  timestamp: int | None = None, wait: bool = True) -> httpx.Response:
    """Post the event as Stripe does. The webhook answers once the event is recorded (`received`);
    with `wait`, the answer given back carries the state the applier then left it in (read through
    the admin API, so `client` must hold the admin token)."""
    payload = encode(event)
    response = await client.post("/v1/billing/stripe/webhook", content=payload, headers={
        "Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json; charset=utf-8",
        "Authorization": ""})
    if not wait or response.status_code != 200 or response.json()["state"] != "received":
        return response
    state = await applied_state(client, event["id"])
    return httpx.Response(200, json={**response.json(), "state": state}, request=response.request)


async def applied_state(client: httpx.AsyncClient, event_id: str, timeout: float = 30) -> str:
    """The event's state once the applier has taken it out of `received`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.get(f"/v1/billing/events/{event_id}")
        assert answer.status_code == 200, f"waiting for {event_id} needs an admin client: {answer.text}"
        if answer.json()["state"] != "received":
            return answer.json()["state"]
        assert time.monotonic() < deadline, f"{event_id} was not applied within {timeout} s"
        await asyncio.sleep(0.02)


def subscription(sub_id: str, customer: str, price: str, *, status: str = "active",
                 period_end: int | None = None) -> dict[str, Any]:
    end = period_end or int(time.time()) + 30 * 86400
    return {"id": sub_id, "object": "subscription", "customer": customer, "status": status,
            "items": {"object": "list", "data": [{"id": new_id("si"), "object": "subscription_item",
                                                  "price": {"id": price, "object": "price"},
                                                  "current_period_end": end}]}}


def invoice(invoice_id: str, customer: str, *, period_end: int, subscription_id: str | None = None) -> dict[str, Any]:
    return {"id": invoice_id, "object": "invoice", "customer": customer, "subscription": subscription_id,
            "period_start": period_end - 30 * 86400, "period_end": period_end - 30 * 86400,
            "lines": {"object": "list", "data": [{"id": new_id("il"), "object": "line_item",
                                                  "period": {"start": period_end - 30 * 86400, "end": period_end}}]}}


def checkout_completed(tenant_id: uuid.UUID, customer: str, sub_id: str) -> dict[str, Any]:
    return {"id": new_id("cs"), "object": "checkout.session", "mode": "subscription", "status": "complete",
            "client_reference_id": str(tenant_id), "metadata": {"tenant_id": str(tenant_id)},
            "customer": customer, "subscription": sub_id}
