"""One database server down: only its tenants get 503, others are untouched, and its tenants recover
by themselves when it returns."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from control_plane.embedded import EmbeddedPostgres
from tests.conftest import create_active_tenant, extra_postgres, unique_slug, wait_for


@pytest.fixture(scope="module")
def pg2(tmp_root):
    with extra_postgres(tmp_root, "pg-outage") as server:
        yield server


async def test_an_outage_stays_with_its_own_tenants(api, tenant_app, pg2: EmbeddedPostgres):
    name = f"outage-{uuid.uuid4().hex[:8]}"
    # room for exactly one tenant, so no other test's tenant is ever placed on this server
    r = await api.post("/v1/database-servers", json={"name": name, "dsn": pg2.dsn(), "capacity_databases": 1})
    assert r.status_code == 201, r.text
    r = await api.post("/v1/tenants", json={"slug": unique_slug("o"), "name": "On pg2", "server": name})
    on_pg2 = await wait_for(api, r.json()["tenant"]["id"], "active")
    elsewhere = await create_active_tenant(api)
    assert on_pg2["server"] == name and elsewhere["server"] == "local"

    def host(t: dict) -> dict[str, str]:
        return {"Host": f"{t['slug']}.localhost"}

    for t in (on_pg2, elsewhere):
        assert (await tenant_app.post("/api/projects", json={"name": "before"}, headers=host(t))).status_code == 201

    pg2.stop()
    r = await tenant_app.get("/api/projects", headers=host(on_pg2))
    assert r.status_code == 503 and r.json()["code"] == "tenant_unavailable"
    assert r.headers["retry-after"]
    r = await tenant_app.get("/api/projects", headers=host(elsewhere))
    assert r.status_code == 200 and [p["name"] for p in r.json()] == ["before"]

    pg2.start()
    deadline = time.monotonic() + 15
    while (r := await tenant_app.get("/api/projects", headers=host(on_pg2))).status_code != 200:
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.2)
    assert [p["name"] for p in r.json()] == ["before"]
