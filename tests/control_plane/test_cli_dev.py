"""`make run` (tenantctl dev): starts everything on embedded defaults, prints how to use it, stops
everything on Ctrl-C, and finds the same tenants on the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from control_plane.embedded import free_port, port_is_free
from tests.conftest import ROOT, unique_slug


def start_dev(data_dir: Path, api_port: int, app_port: int) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CATALOG_DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "SECRET_KEY")}
    env.update({"API_PORT": str(api_port), "APP_PORT": str(app_port), "PYTHONPATH": str(ROOT)})
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "dev", "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return proc, "".join(lines)
    proc.kill()
    raise AssertionError("tenantctl dev did not start:\n" + "".join(lines[-40:]))


def stop_dev(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


def test_dev_starts_everything_prints_usage_and_keeps_tenants(tmp_path: Path):
    api_port, app_port = free_port(), free_port()
    proc, banner = start_dev(tmp_path, api_port, app_port)
    try:
        token = (tmp_path / "admin_token").read_text().strip()
        assert f"http://127.0.0.1:{api_port}" in banner and f":{app_port}" in banner and token in banner
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"})
        slug = unique_slug("dev")
        assert api.post("/v1/tenants", json={"slug": slug, "name": "Dev"}).status_code == 202
        deadline = time.monotonic() + 60
        while api.get(f"/v1/tenants/{slug}").json()["status"] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        app = httpx.Client(base_url=f"http://127.0.0.1:{app_port}", headers={"Host": f"{slug}.localhost"})
        assert app.post("/api/projects", json={"name": "kept"}).status_code == 201
    finally:
        stop_dev(proc)
    pg_port = int((tmp_path / "postgres" / "port").read_text())
    assert proc.returncode is not None
    for port in (api_port, app_port, pg_port):
        assert port_is_free(port), f"port {port} still in use after Ctrl-C"

    proc, _ = start_dev(tmp_path, api_port, app_port)
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {token}"})
        assert api.get(f"/v1/tenants/{slug}").json()["status"] == "active"
        app = httpx.Client(base_url=f"http://127.0.0.1:{app_port}", headers={"Host": f"{slug}.localhost"})
        assert [p["name"] for p in app.get("/api/projects").json()] == ["kept"]
    finally:
        stop_dev(proc)
