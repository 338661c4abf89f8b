"""`tenantctl events list|redeliver` as an operator runs them (a subprocess against `tenantctl api`):
an abandoned event listed by state and sent again; one that is not abandoned is the API's problem
and exit 1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from tests.conftest import Stack, create_active_tenant, unique_slug
from tests.control_plane.cli_api import api_process, as_json, operator_env, tenantctl


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> Iterator[str]:
    with api_process(stack) as url:
        yield url


async def run(*args: str, env: dict[str, str]):
    return await asyncio.to_thread(tenantctl, *args, env=env)


async def test_an_abandoned_event_is_listed_and_redelivered_from_the_cli(api, api_url, stack: Stack):
    tenant = await create_active_tenant(api, unique_slug("cle"))
    created = (await api.get("/v1/events", params={"tenant": tenant["id"]})).json()["items"][0]
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.execute("UPDATE tenant_events SET attempts = 4, last_error = 'HTTP 502', abandoned_at = now() "
                           "WHERE id = $1", created["id"])
    finally:
        await conn.close()
    env = operator_env(api_url, stack.settings.admin_token)

    listed = as_json(await run("events", "list", "--state", "abandoned", "--tenant", tenant["slug"], "--json", env=env))
    assert [(e["id"], e["delivery"]["state"]) for e in listed["items"]] == [(created["id"], "abandoned")]
    human = await run("events", "list", "--tenant", tenant["slug"], env=env)
    assert human.returncode == 0 and human.stdout.startswith("ID")
    assert "tenant.created" in human.stdout and "abandoned" in human.stdout and "HTTP 502" in human.stdout

    sent = await run("events", "redeliver", str(created["id"]), env=env)
    assert sent.returncode == 0 and f"event {created['id']} (tenant.created) pending" in sent.stdout, sent.stderr
    again = await run("events", "redeliver", str(created["id"]), env=env)
    assert again.returncode == 1 and "event_not_abandoned:" in again.stderr and "Traceback" not in again.stderr
    missing = await run("events", "redeliver", "../../v1/admin-keys", env=env)  # one segment, never another route
    assert missing.returncode == 1 and "route_not_found:" in missing.stderr, missing.stderr


async def test_a_tenants_abandoned_events_are_redelivered_from_the_cli(api, api_url, stack: Stack):
    tenant = await create_active_tenant(api, unique_slug("clb"))
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        await conn.execute("UPDATE tenant_events SET abandoned_at = now() WHERE tenant_id = $1", tenant["id"])
    finally:
        await conn.close()
    env = operator_env(api_url, stack.settings.admin_token)
    done = as_json(await run("events", "redeliver", "--tenant", tenant["slug"], "--json", env=env))
    assert len(done["ids"]) == 1 and done["more"] is False
    human = await run("events", "redeliver", "--tenant", tenant["slug"], env=env)
    assert human.returncode == 0 and "0 event(s) pending again" in human.stdout
    both = await run("events", "redeliver", "1", "--tenant", tenant["slug"], env=env)
    assert both.returncode == 2 and "EVENT_ID" in both.stderr
