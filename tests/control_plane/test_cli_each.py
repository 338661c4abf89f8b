"""`tenantctl each -- <command>`: the command runs once per named tenant with the tenant in its
environment, every tenant's outcome is reported, and a failure anywhere fails the whole run."""

from __future__ import annotations

import asyncio
import sys

from tests.conftest import ROOT, Stack, create_active_tenant

SHOW = "import os, sys; print(os.environ['TENANT_SLUG'], os.environ['TENANT_TIER']); sys.exit(os.environ['TENANT_SLUG'] == sys.argv[1])"


async def tenantctl(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "control_plane.cli", *args, env=stack.env(),
                                                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def test_each_runs_the_command_per_tenant_and_reports(api, stack: Stack):
    a, b = await create_active_tenant(api), await create_active_tenant(api)
    code, out = await tenantctl(stack, "each", "--tenant", a["slug"], "--tenant", b["id"], "--",
                                sys.executable, "-c", SHOW, "nobody")
    assert code == 0, out
    assert f"[{a['slug']}] {a['slug']} dedicated" in out and f"[{b['slug']}] {b['slug']} dedicated" in out
    assert "2 of 2 tenants ok" in out

    code, out = await tenantctl(stack, "each", "--tenant", a["slug"], "--tenant", b["slug"], "--tenant", "ghost-tenant",
                                "--", sys.executable, "-c", SHOW, b["slug"])
    assert code == 1, out
    assert f"{a['slug']}: ok" in out and f"{b['slug']}: FAILED (RuntimeError)" in out
    assert "ghost-tenant: FAILED (tenant_not_found)" in out and "1 of 3 tenants ok" in out


def test_a_missing_setting_names_its_variable_without_a_traceback(tmp_path):
    """Run with none of the product's settings: the error is one line naming what to set."""
    import subprocess

    from tests.control_plane.cli_api import operator_env

    for extra, variable in (({}, "ROUTER_KEY"), ({"SECRET_KEY": "k" * 40}, "CATALOG_DATABASE_URL")):
        done = subprocess.run([sys.executable, "-m", "control_plane.cli", "each", "--", "true"], cwd=tmp_path,
                              env=operator_env(None, None, **extra), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and variable in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "catalog_dsn" not in done.stderr, done.stderr
