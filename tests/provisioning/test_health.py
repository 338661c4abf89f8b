"""The worker's own endpoint: a real worker process with WORKER_METRICS_PORT=0 logs the free port it
took on 127.0.0.1 and answers /health/live, /health/ready and /metrics (queue depth by kind and
state, operation and step durations, spares per server) there; readiness follows the loop's
heartbeat (a stuck loop or an unreachable catalog answers 503)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid

import asyncpg
import httpx

from provisioning.health import HealthServer, Heartbeat
from provisioning.metrics import WorkerMetrics
from tests.conftest import admin_client, create_active_tenant, make_stack, stop_process, unique_slug


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_worker_process_serves_health_and_metrics_on_its_port(pg, redis_server):
    stack = await make_stack(pg, redis_server.url, "catalog_health")
    proc = stack.start_worker(capture=True, WORKER_METRICS_PORT="0", SPARE_DATABASES="1",
                              BILLING_INTERVAL_SECONDS="0", RECONCILE_INTERVAL_SECONDS="0")
    lines: list[str] = []
    port: list[int] = []

    def drain() -> None:  # the pipe is read to its end, or a full pipe would block the worker
        for line in proc.stdout:
            lines.append(line)
            if not port and (m := re.search(r"worker health and metrics on http://127\.0\.0\.1:(\d+)", line)):
                port.append(int(m.group(1)))

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not port and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert port, "no port logged:\n" + "".join(lines[-20:])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port[0]}", timeout=5) as probe:
            assert (await probe.get("/health/live")).status_code == 200
            for _ in range(100):
                ready = await probe.get("/health/ready")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 200 and ready.json()["catalog"] == "ok", ready.text
            assert (await probe.get("/nope")).status_code == 404

            async with admin_client(stack) as api:
                created = await create_active_tenant(api, unique_slug("h"))
            # an open operation that is not due: the queue's depth shows it by kind and state
            conn = await asyncpg.connect(stack.catalog_dsn)
            try:
                tid = uuid.uuid4()
                await conn.execute("INSERT INTO tenants (id, slug, name, tier, status) "
                                   "VALUES ($1, $2, 'x', 'dedicated', 'active')", tid, unique_slug("hq"))
                await conn.execute("INSERT INTO operations (id, kind, tenant_id, next_attempt_at) "
                                   "VALUES ($1, 'migrate_tenant', $2, now() + interval '1 day')", uuid.uuid4(), tid)
            finally:
                await conn.close()
            for _ in range(150):
                text = (await probe.get("/metrics")).text
                if _sample(text, "tenantplane_worker_queue_depth", kind="migrate_tenant", state="queued") == 1 \
                        and _sample(text, "tenantplane_worker_spare_databases", server="local") is not None:
                    break
                await asyncio.sleep(0.1)
            assert _sample(text, "tenantplane_worker_queue_depth", kind="migrate_tenant", state="queued") == 1
            assert _sample(text, "tenantplane_worker_operation_seconds_count", kind="create_tenant",
                           outcome="succeeded") == 1
            assert _sample(text, "tenantplane_worker_step_seconds_count", kind="create_tenant",
                           outcome="succeeded") >= 1
            assert _sample(text, "tenantplane_worker_spare_databases", server="local") >= 0
            assert _sample(text, "tenantplane_worker_catalog_up") == 1
            assert _sample(text, "tenantplane_worker_announcements_waiting") == 0  # Redis answers: none due
            assert _sample(text, "tenantplane_worker_events_abandoned_total") == 0  # none given up by this worker
            assert created["id"] not in text  # never labelled by tenant
    finally:
        stop_process(proc)
    assert proc.returncode == 0


async def test_readiness_follows_the_heartbeat():
    beat = Heartbeat(longest_pause=0)
    server = HealthServer("127.0.0.1", 0, beat, WorkerMetrics())
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as probe:
            # before any round reached the catalog: live, not ready
            assert (await probe.get("/health/live")).status_code == 200
            assert (await probe.get("/health/ready")).json()["catalog"] == "unreachable"
            beat.tick(catalog_ok=True)
            assert (await probe.get("/health/ready")).status_code == 200
            beat.tick(catalog_ok=False)  # a round that could not reach the catalog
            assert (await probe.get("/health/ready")).status_code == 503
            beat.tick(catalog_ok=True)
            beat.ticked_at -= beat.limit + 1  # no round for longer than the loop ever pauses: stuck
            live, ready = await probe.get("/health/live"), await probe.get("/health/ready")
            assert (live.status_code, live.json()["status"]) == (503, "stuck")
            assert (ready.status_code, ready.json()["loop"]) == (503, "stuck")
            assert "tenantplane_worker_catalog_up" in (await probe.get("/metrics")).text
    finally:
        server.close()
