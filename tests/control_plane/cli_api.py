"""The control-plane API as a process (`tenantctl api`) on a free port, and tenantctl run against it
as a subprocess with an admin key's token and none of the product's settings: what an operator's
shell holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from control_plane.embedded import free_port
from tests.conftest import ROOT, Stack, stop_process

# the product's settings: an admin command must work without any of them
PRODUCT_VARS = ("CATALOG_DATABASE_URL", "SECRET_KEY", "REDIS_URL", "ADMIN_TOKEN", "TENANT_JWT_SECRET",
                "BACKUP_STORE_URL", "BACKUP_MASTER_KEY_FILE", "STRIPE_API_KEY")


@contextmanager
def api_process(stack: Stack, **extra_env: str) -> Iterator[str]:
    """`tenantctl api` serving `stack`'s catalog; yields its base URL."""
    port = free_port()
    env = stack.env(API_PORT=str(port), ADMIN_TOKEN=stack.settings.admin_token, **extra_env)
    log = open(stack.pg.data_dir.parent / f"api-{os.getpid()}-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "api"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "tenantctl api did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def operator_env(url: str | None, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in PRODUCT_VARS and not k.startswith(("TENANTPLANE_", "TENANTPLANE_TEST_"))}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["TENANTPLANE_URL"] = url
    if token is not None:
        env["TENANTPLANE_TOKEN"] = token
    env.update(extra)
    return env


def tenantctl(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120,
              input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control_plane.cli", *args], env=env, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, input=input)


def as_json(done: subprocess.CompletedProcess) -> object:
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)
