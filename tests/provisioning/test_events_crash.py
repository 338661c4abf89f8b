"""Lifecycle events with real worker processes: a worker SIGKILLed just before an operation's end
leaves neither the change nor its event; the next worker commits both, once. The events reach a
real HTTP receiver (which fails its first two posts), signed, each id at least once, in order."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.conftest import Stack, admin_client, make_stack, stop_process, unique_slug
from tests.provisioning.test_crash_recovery import sigkill, wait_paused
from tests.provisioning.test_event_delivery import SECRET, verify
from tests.provisioning.test_events import tenant_events
from tests.provisioning.test_outbox import Receiver


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    server = Receiver(failures=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def events_stack(pg, redis_server) -> Stack:
    # its own catalog: no session worker competes for these operations
    return await make_stack(pg, redis_server.url, "catalog_events_crash")


@pytest.fixture(scope="module")
async def events_api(events_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(events_stack) as client:
        yield client


def _env(hooks: Receiver) -> dict[str, str]:
    return {"EVENTS_WEBHOOK_URL": hooks.url, "EVENTS_WEBHOOK_SECRET": SECRET, "EVENTS_INTERVAL_SECONDS": "0.2",
            "EVENTS_RETRY_BASE_SECONDS": "0.2", "SPARE_DATABASES": "0"}


async def _until(check, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (outcome := await check()):
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.1)
    return outcome


async def _killed_at_finish_then_done(stack: Stack, api: httpx.AsyncClient, hooks: Receiver, tenant_id: str,
                                      op_id: str, types_before: list[str]) -> None:
    paused = stack.start_worker(capture=True, TENANTPLANE_TEST_PAUSE_BEFORE_STEP="finish", **_env(hooks))
    try:
        await wait_paused(paused, "finish")
    finally:
        sigkill(paused)
    # every step done, the end not recorded: neither the change nor its event
    assert (await api.get(f"/v1/operations/{op_id}")).json()["state"] == "running"
    assert [e.type for e in await tenant_events(stack, tenant_id)] == types_before
    worker = stack.start_worker(**_env(hooks))
    try:
        async def ended() -> bool:
            return (await api.get(f"/v1/operations/{op_id}")).json()["state"] == "succeeded"

        await _until(ended)
    finally:
        stop_process(worker)


async def test_events_commit_with_their_change_across_a_sigkill_and_are_delivered(
        events_stack: Stack, events_api: httpx.AsyncClient, hooks: Receiver):
    api, stack = events_api, events_stack
    r = await api.post("/v1/tenants", json={"slug": unique_slug("evk"), "name": "Killed", "tier": "dedicated"})
    assert r.status_code == 202, r.text
    tenant_id, op_id = r.json()["tenant"]["id"], r.json()["operation_id"]
    await _killed_at_finish_then_done(stack, api, hooks, tenant_id, op_id, [])
    assert (await api.get(f"/v1/tenants/{tenant_id}")).json()["status"] == "active"
    for status in ("suspended", "active"):
        assert (await api.patch(f"/v1/tenants/{tenant_id}", json={"status": status})).status_code == 200
    r = await api.post(f"/v1/tenants/{tenant_id}/move", json={"tier": "shared"})
    assert r.status_code == 202, r.text
    await _killed_at_finish_then_done(stack, api, hooks, tenant_id, r.json()["operation_id"],
                                      ["tenant.created", "tenant.suspended", "tenant.resumed"])
    r = await api.delete(f"/v1/tenants/{tenant_id}")
    assert r.status_code == 202, r.text
    await _killed_at_finish_then_done(stack, api, hooks, tenant_id, r.json()["operation_id"],
                                      ["tenant.created", "tenant.suspended", "tenant.resumed", "tenant.moved"])
    found = await tenant_events(stack, tenant_id)
    expected = ["tenant.created", "tenant.suspended", "tenant.resumed", "tenant.moved", "tenant.deleted"]
    assert [e.type for e in found] == expected  # once each

    # delivery: the workers with the webhook post the events (also those of the suspend and resume,
    # made while no worker ran); the receiver failed its first two posts, so retries were needed
    worker = stack.start_worker(**_env(hooks))
    try:
        def delivered() -> dict[int, dict]:
            got = {}
            for headers, body in list(hooks.received):
                event = json.loads(body)
                if event["tenant_id"] == tenant_id:
                    verify(headers, body)
                    assert headers["Tenantplane-Delivery"] == str(event["id"])
                    got[event["id"]] = event
            return got

        async def all_delivered() -> dict[int, dict]:
            got = delivered()
            return got if len(got) == len(expected) else {}

        got = await _until(all_delivered)
    finally:
        stop_process(worker)
    assert [got[i]["type"] for i in sorted(got)] == expected
    assert sorted(got) == [e.id for e in found]
    posts = [json.loads(body)["id"] for _, body in hooks.received]
    # the first two posts were answered 500: those events were posted again, with the same id
    assert len(posts) >= len(expected) + 2 and posts.count(posts[0]) >= 2 and posts.count(posts[1]) >= 2
    assert {e.id: e.data for e in found} == {i: got[i]["data"] for i in got}
