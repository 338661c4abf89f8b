"""`python -m bench billing`: the Stripe webhook under 200 concurrent deliveries.

The control-plane API runs as its own process (`python -m control_plane.cli api`, one uvicorn
worker) beside one provisioning worker (`python -m control_plane.cli worker`, which applies the
recorded events, as in production) on the benchmark's PostgreSQL and Valkey; this process plays Stripe: it signs events the
way Stripe does and posts them over HTTP, 200 at a time. The events are what a billing fleet
sends (subscription updates that change plans, paid and failed invoices) for tenants that exist
in the catalog as rows (billing needs no tenant database), and a fifth of the deliveries are
duplicates of events already sent, some of them while the first delivery is still in flight.

Figures: `webhook_p99_ms` (and p50) over every delivery, `webhook_events_per_s` (distinct events
recorded per second of the run), `webhook_applied_per_s` (until the worker's applier has
applied every one of them), and the baseline in the same run: `GET /health/live`
at the same concurrency on the same process (what HTTP and the framework cost without the
webhook's work). Afterwards every event must be recorded once, with one delivery per post.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.lean_http import LeanConnection
from bench.results import Report, at_most, info
from bench.stack import bench_stack

ROOT = Path(__file__).resolve().parent.parent
TENANTS = 200
EVENTS = int(os.environ.get("BENCH_BILLING_EVENTS", "3000"))
DUPLICATE_SHARE = 0.2
CONCURRENCY = 200
STRIPE_TIMEOUT_MS = 10_000  # Stripe gives an endpoint 10 s (it counts a slower answer as failed)
SECRET = "whsec_bench_" + secrets.token_hex(16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sign(payload: bytes) -> str:
    t = int(time.time())
    return f"t={t},v1={hmac.new(SECRET.encode(), f'{t}.'.encode() + payload, hashlib.sha256).hexdigest()}"


def _events(customers: list[str], prices: list[str]) -> list[dict]:
    """Per tenant, a subscription and its invoices, in the order Stripe would emit them."""
    rnd = random.Random(11)
    now = int(time.time())
    events = []
    for i in range(EVENTS):
        customer = rnd.choice(customers)
        created = now - EVENTS + i
        kind = rnd.random()
        if kind < 0.4:
            obj = {"id": f"sub_{customer[4:]}", "object": "subscription", "customer": customer, "status": "active",
                   "items": {"object": "list", "data": [{"price": {"id": rnd.choice(prices)},
                                                         "current_period_end": now + 30 * 86400}]}}
            type_ = "customer.subscription.updated"
        else:
            invoice = f"in_{customer[4:]}_{i}"
            obj = {"id": invoice, "object": "invoice", "customer": customer,
                   "lines": {"object": "list", "data": [{"period": {"start": now, "end": now + 30 * 86400}}]}}
            type_ = "invoice.paid" if kind < 0.9 else "invoice.payment_failed"
        events.append({"id": f"evt_bench_{i:06d}_{uuid.uuid4().hex[:8]}", "object": "event", "type": type_,
                       "created": created, "livemode": False, "data": {"object": obj}})
    return events


def _deliveries(events: list[dict]) -> list[dict]:
    """Every event once, plus duplicates: each a resend of an event sent shortly before (so some
    arrive while the first delivery is in flight)."""
    rnd = random.Random(12)
    out: list[dict] = []
    for event in events:
        out.append(event)
        if rnd.random() < DUPLICATE_SHARE / (1 - DUPLICATE_SHARE):
            out.append(rnd.choice(out[-CONCURRENCY:]))
    return out


async def _seed(catalog_dsn: str) -> tuple[list[str], list[str]]:
    conn = await asyncpg.connect(catalog_dsn)
    try:
        prices = [f"price_bench_{i}" for i in range(3)]
        for i, price in enumerate(prices):
            await conn.execute("INSERT INTO plans (name, features, stripe_price_ids) VALUES ($1, $2, $3)",
                               f"bench_plan_{i}", [f"feature_{i}"], [price])
        customers = [f"cus_bench{i:05d}" for i in range(TENANTS)]
        await conn.executemany(
            "INSERT INTO tenants (id, slug, name, tier, status, stripe_customer_id) VALUES ($1, $2, 'b', 'shared', 'active', $3)",
            [(uuid.uuid4(), f"bill{i:05d}", customer) for i, customer in enumerate(customers)])
        return customers, prices
    finally:
        await conn.close()


async def _post_all(port: int, bodies: list[tuple[str, bytes | None]]) -> tuple[list[float], float, int]:
    """Each (path, body) posted (or got, without a body) with CONCURRENCY in flight, each on a
    keep-alive connection of its own (bench/lean_http.py: the client must not take the cores the
    server is measured on); latencies in ms, wall seconds, and how many answers were not 200."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        conn = LeanConnection("127.0.0.1", port)
        try:
            while not queue.empty():
                path, body = queue.get_nowait()
                started = time.perf_counter()
                if body is None:
                    status = await conn.request("GET", path)
                else:
                    status = await conn.request("POST", path, body, (
                        ("Stripe-Signature", _sign(body)), ("Content-Type", "application/json")))
                latencies.append((time.perf_counter() - started) * 1000)
                failures += status != 200
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return latencies, time.perf_counter() - started, failures


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(report: Report) -> None:
    async with bench_stack("billing", max_connections=100, capacity_connections=90) as stack:
        customers, prices = await _seed(stack.catalog_dsn)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTPLANE_TEST_")}
        env.update({"CATALOG_DATABASE_URL": stack.catalog_dsn, "SECRET_KEY": stack.settings.secret_key,
                    "REDIS_URL": stack.settings.redis_url or "", "ADMIN_TOKEN": stack.settings.admin_token or "",
                    "STRIPE_WEBHOOK_SECRET": SECRET, "API_PORT": str(port), "LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT)})
        log = stack.pg.data_dir.parent / "api.log"
        with open(log, "w") as out:
            api = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "api"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        with open(stack.pg.data_dir.parent / "worker.log", "w") as out:
            worker = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "worker"], env=env, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                await _wait_ready(client, api, log)
            events = _events(customers, prices)
            deliveries = _deliveries(events)
            bodies = [("/v1/billing/stripe/webhook", json.dumps(e, indent=2).encode()) for e in deliveries]
            await _post_all(port, [("/health/live", None)] * 400)  # warm: connections, caches
            cpu = _cpu_seconds(api.pid)
            base, base_wall, _ = await _post_all(port, [("/health/live", None)] * len(bodies))
            base_cpu, cpu = _cpu_seconds(api.pid) - cpu, _cpu_seconds(api.pid)
            latencies, wall, failures = await _post_all(port, bodies)
            webhook_cpu = _cpu_seconds(api.pid) - cpu
            drain = await _drained(stack.catalog_dsn)
            await _check(stack.catalog_dsn, events, deliveries, report)
        finally:
            for proc in (api, worker):
                proc.terminate()
            for proc in (api, worker):
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        p99 = _pct(latencies, 0.99)
        report.add(at_most("webhook_p99_ms", round(p99, 1), STRIPE_TIMEOUT_MS / 10, "ms",
                           f"{len(deliveries)} deliveries ({len(deliveries) - len(events)} duplicates), "
                           f"{CONCURRENCY} in flight; p50 {_pct(latencies, 0.5):.1f} ms; {failures} not 200; "
                           f"baseline GET /health/live p50 {_pct(base, 0.5):.1f} ms, p99 {_pct(base, 0.99):.1f} ms"))
        report.add(info("webhook_cpu_s", round(webhook_cpu, 2), "s",
                        f"the API process's CPU over the {len(deliveries)} deliveries "
                        f"({webhook_cpu / len(deliveries) * 1000:.2f} ms each); baseline {base_cpu:.2f} s "
                        f"for as many GET /health/live"))
        report.add(info("webhook_events_per_s", round(len(events) / wall, 1), "events/s",
                        f"recorded; {len(deliveries) / wall:.0f} deliveries/s; baseline {len(base) / base_wall:.0f} req/s"))
        report.add(info("webhook_applied_per_s", round(len(events) / (wall + drain), 1), "events/s",
                        f"from the first delivery until the applier had applied every event; it finished "
                        f"{drain:.1f} s after the last answer"))


async def _wait_ready(client: httpx.AsyncClient, api: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()[-2000:]}")
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the API did not start")


async def _drained(catalog_dsn: str, timeout: float = 600) -> float:
    """Seconds from now until the worker's applier has taken every event out of `received`."""
    conn = await asyncpg.connect(catalog_dsn)
    started = time.perf_counter()
    try:
        while await conn.fetchval("SELECT count(*) FROM billing_events WHERE state = 'received'"):
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"events still received after {timeout} s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _check(catalog_dsn: str, events: list[dict], deliveries: list[dict], report: Report) -> None:
    """Every event recorded once, its deliveries counted, none failed."""
    conn = await asyncpg.connect(catalog_dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n, sum(deliveries) AS d FROM billing_events GROUP BY state")
        errors = {r["error"]: r["n"] for r in await conn.fetch(
            "SELECT error, count(*) AS n FROM billing_events WHERE state = 'failed' GROUP BY error")}
    finally:
        await conn.close()
    recorded = sum(r["n"] for r in rows)
    delivered = sum(r["d"] for r in rows)
    states = {r["state"]: r["n"] for r in rows}
    # a delivery whose answer was lost and was retried counts twice; an event whose effect failed
    # was rolled back and kept as failed (for replay), and its concurrent copy may have applied it
    if recorded != len(events) or delivered < len(deliveries) - states.get("failed", 0):
        raise AssertionError(f"recorded {recorded} of {len(events)} events, {delivered} of {len(deliveries)} "
                             f"deliveries; states {states}; errors {errors}")
    report.add(info("webhook_events_recorded", recorded, "", f"states {states}"))
    report.add(at_most("webhook_failed_events", states.get("failed", 0), 0, "", f"errors {errors}"))
