"""Hostile input on every backup endpoint: malformed JSON, wrong types, unknown and foreign ids,
NUL bytes, impossible path parameters. Always a 4xx problem with a stable code, never a 500, and
nothing queued."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import create_active_tenant
from tests.provisioning.test_backup_restore import take_backup


@pytest.fixture(scope="module")
async def tenant(api: httpx.AsyncClient) -> dict:
    return await create_active_tenant(api)


@pytest.fixture(scope="module")
async def other_backup(api: httpx.AsyncClient) -> dict:
    other = await create_active_tenant(api)
    return await take_backup(api, other["id"])


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


BAD_BODIES = [
    ("trailing-comma", b'{"label": "x",}', 400, "malformed_json"),
    ("nul-after-json", b'{"label": "x"}\x00', 400, "malformed_json"),
    ("not-an-object", b'["x"]', 422, "validation_failed"),
    ("label-number", b'{"label": 5}', 422, "validation_failed"),
    ("label-nul", b'{"label": "a\\u0000b"}', 422, "validation_failed"),
    ("label-too-long", b'{"label": "' + b"x" * 201 + b'"}', 422, "validation_failed"),
    ("unknown-field", b'{"labels": "x"}', 422, "validation_failed"),
]


@pytest.mark.parametrize("name,body,status,code", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_create_backup_refuses_bad_bodies(api, tenant, name, body, status, code):
    response = await api.post(f"/v1/tenants/{tenant['id']}/backups", content=body,
                              headers={"content-type": "application/json"})
    problem(response, status, code)
    assert (await api.get(f"/v1/tenants/{tenant['id']}/backups")).json()["items"] == []


RESTORE_BODIES = [
    ("empty-object", b"{}", 422, "validation_failed"),
    ("malformed", b'{"backup_id": ', 400, "malformed_json"),
    ("id-number", b'{"backup_id": 7}', 422, "validation_failed"),
    ("id-not-uuid", b'{"backup_id": "nope"}', 422, "validation_failed"),
    ("id-nul", b'{"backup_id": "\\u0000"}', 422, "validation_failed"),
    ("id-list", b'{"backup_id": ["x"]}', 422, "validation_failed"),
    ("unknown-id", ('{"backup_id": "%s"}' % uuid.uuid4()).encode(), 422, "unknown_backup"),
    ("tier-unknown", ('{"backup_id": "%s", "tier": "galaxy"}' % uuid.uuid4()).encode(), 422, "validation_failed"),
    ("tier-number", ('{"backup_id": "%s", "tier": 3}' % uuid.uuid4()).encode(), 422, "validation_failed"),
    ("tier-nul", ('{"backup_id": "%s", "tier": "shared\\u0000"}' % uuid.uuid4()).encode(), 422, "validation_failed"),
]


@pytest.mark.parametrize("name,body,status,code", RESTORE_BODIES, ids=[b[0] for b in RESTORE_BODIES])
async def test_restore_refuses_bad_bodies(api, tenant, name, body, status, code):
    response = await api.post(f"/v1/tenants/{tenant['id']}/restore", content=body,
                              headers={"content-type": "application/json"})
    problem(response, status, code)
    assert (await api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "active"


async def test_restore_refuses_another_tenants_backup(api, tenant, other_backup):
    response = await api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": other_backup["id"]})
    problem(response, 422, "backup_of_other_tenant")


@pytest.mark.parametrize("key", ["nope", "00000000-0000-0000-0000-000000000000", "a%00b", "x" * 100])
async def test_unknown_backups_and_tenants_are_404(api, key):
    problem(await api.get(f"/v1/backups/{key}"), 404, "backup_not_found")
    problem(await api.get(f"/v1/tenants/{key}/backups"), 404, "tenant_not_found")
    problem(await api.post(f"/v1/tenants/{key}/backups"), 404, "tenant_not_found")
    problem(await api.post(f"/v1/tenants/{key}/keys/rotate"), 404, "tenant_not_found")
    problem(await api.post(f"/v1/tenants/{key}/keys/rewrap"), 404, "tenant_not_found")
    problem(await api.post(f"/v1/tenants/{key}/restore", json={"backup_id": str(uuid.uuid4())}), 404,
            "tenant_not_found")


async def test_overlong_path_parameters_are_4xx(api):
    for response in (await api.get("/v1/backups/" + "x" * 101), await api.post("/v1/tenants/" + "x" * 101 + "/backups")):
        assert 400 <= response.status_code < 500, response.text


async def test_a_second_backup_while_one_runs_is_a_conflict(api, tenant):
    first = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    assert first.status_code == 202
    second = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    if second.status_code != 202:  # the first may have ended already on a fast machine
        problem(second, 409, "operation_in_progress")


async def test_a_rewrap_while_a_backup_runs_is_a_conflict(api, tenant):
    first = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    assert first.status_code in (202, 409), first.text  # 409: the previous test's backup still runs
    rewrap = await api.post(f"/v1/tenants/{tenant['id']}/keys/rewrap")
    if rewrap.status_code != 200:  # the backup may have ended already on a fast machine
        problem(rewrap, 409, "operation_in_progress")
