"""Two router processes (real uvicorn servers) see a suspension within a second of the admin call."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx

from control_plane.embedded import free_port
from tests.conftest import ROOT, Stack, create_active_tenant, stop_process


async def wait_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                await client.get(f"http://127.0.0.1:{port}/health/live")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"router on {port} did not start")


async def test_a_suspension_reaches_every_router_within_a_second(api, stack: Stack):
    tenant = await create_active_tenant(api)
    ports = [free_port(), free_port()]
    routers = [subprocess.Popen([sys.executable, "-m", "control_plane.cli", "app"], cwd=ROOT,
                                env=stack.env(APP_PORT=str(port)), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True) for port in ports]
    try:
        for port in ports:
            await wait_http(port)
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Host": f"{tenant['slug']}.localhost"}) for port in ports]
        for client in clients:  # warm both caches
            assert (await client.get("/api/projects")).status_code == 200

        assert (await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "suspended"})).status_code == 200
        changed = time.monotonic()
        seen: dict[int, float] = {}
        while len(seen) < len(clients) and time.monotonic() - changed < 5:
            for i, client in enumerate(clients):
                if i not in seen and (await client.get("/api/projects")).status_code == 403:
                    seen[i] = time.monotonic() - changed
            await asyncio.sleep(0.02)
        assert len(seen) == 2 and max(seen.values()) < 1.0, seen

        assert (await api.patch(f"/v1/tenants/{tenant['id']}", json={"status": "active"})).status_code == 200
        await asyncio.sleep(0.3)
        for client in clients:
            assert (await client.get("/api/projects")).status_code == 200
            await client.aclose()
    finally:
        for router in routers:
            stop_process(router)
