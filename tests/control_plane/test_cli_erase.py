"""`tenantctl tenants delete --erase [--wait]` as an operator runs it (a subprocess against
`tenantctl api` as a process): the delete, then the erasure its finish queues, then the report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Stack, unique_slug, wait_for
from tests.control_plane.cli_api import api_process, as_json, operator_env, tenantctl


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> Iterator[str]:
    with api_process(stack) as url:
        yield url


async def run(*args: str, env: dict[str, str], timeout: float = 180):
    return await asyncio.to_thread(tenantctl, *args, env=env, timeout=timeout)


async def _operator(api) -> dict[str, str]:
    r = await api.post("/v1/admin-keys", json={"name": unique_slug("cle"), "scopes": ["tenants:write"]})
    assert r.status_code == 201, r.text
    return r.json()["token"]


async def _active(api, tier: str = "shared") -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("cle"), "name": "CLI Erase", "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


async def test_delete_erase_wait_prints_the_completed_report(api, api_url):
    env = operator_env(api_url, await _operator(api))
    tenant = await _active(api)

    done = await run("tenants", "delete", tenant["slug"], "--yes", "--erase", "--wait", "--json", env=env)
    report = as_json(done)
    assert (report["tenant_id"], report["status"]) == (tenant["id"], "completed"), report
    places = {p["place"]: p for p in report["places"]}
    assert all(p["done"] for p in places.values())
    assert places["stripe_customer"]["details"]["state"] == "not_configured"  # the suite's worker has no key
    erase_op = (await api.get(f"/v1/operations/{report['operation_id']}")).json()
    assert (erase_op["kind"], erase_op["state"]) == ("erase_tenant", "succeeded")


async def test_delete_erase_without_wait_names_the_erasure_then_the_table_shows_it(api, api_url):
    env = operator_env(api_url, await _operator(api))
    tenant = await _active(api)

    started = await run("tenants", "delete", tenant["slug"], "--yes", "--erase", env=env)
    assert started.returncode == 0, started.stderr
    assert "deleting" in started.stdout and "then erasure " in started.stdout
    erasure_id = started.stdout.rsplit("then erasure ", 1)[1].split()[0]
    assert uuid.UUID(erasure_id)
    for _ in range(180):
        shown = await run("tenants", "erasure", tenant["id"], env=env)
        if "completed" in shown.stdout:
            break
        await asyncio.sleep(0.5)
    assert shown.returncode == 0 and "stripe_customer" in shown.stdout and erasure_id in shown.stdout, shown.stdout


async def test_delete_erase_of_a_missing_tenant_prints_the_problem_and_exits_1(api, api_url):
    env = operator_env(api_url, await _operator(api))
    refused = await run("tenants", "delete", str(uuid.uuid4()), "--yes", "--erase", env=env)
    assert refused.returncode == 1 and "tenant_not_found" in refused.stderr + refused.stdout
