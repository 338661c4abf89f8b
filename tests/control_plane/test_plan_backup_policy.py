"""A plan's backup policy through the API: kept and answered as given, null for the global
settings, and bad schedules or retention refused with 422 (never a 500)."""

from __future__ import annotations

import uuid

import pytest


def plan_name() -> str:
    return "bk_" + uuid.uuid4().hex[:10]


async def test_a_plans_backup_policy_is_kept_and_can_be_cleared(api):
    name = plan_name()
    policy = {"schedule": "30 1 * * 1", "keep_days": 14, "keep_last": 5}
    put = await api.put(f"/v1/plans/{name}", json={"features": [], "backup": policy})
    assert put.status_code == 200, put.text
    assert put.json()["backup"] == policy
    assert (await api.get(f"/v1/plans/{name}")).json()["backup"] == policy
    off = await api.put(f"/v1/plans/{name}", json={"backup": {"schedule": "off", "keep_days": 0, "keep_last": 1}})
    assert off.status_code == 200 and off.json()["backup"]["schedule"] == "off", off.text
    cleared = await api.put(f"/v1/plans/{name}", json={"backup": None})
    assert cleared.status_code == 200 and cleared.json()["backup"] is None, cleared.text
    assert (await api.put(f"/v1/plans/{name}", json={})).json()["backup"] is None


@pytest.mark.parametrize("backup", [
    {"schedule": "61 * * * *", "keep_days": 1, "keep_last": 1},
    {"schedule": "every night", "keep_days": 1, "keep_last": 1},
    {"schedule": "0 3 * * * *", "keep_days": 1, "keep_last": 1},
    {"schedule": "0 3 * * *", "keep_days": -1, "keep_last": 1},
    {"schedule": "0 3 * * *", "keep_days": 1, "keep_last": -3},
    {"schedule": "0 3 * * *", "keep_days": 1},
    {"schedule": "", "keep_days": 1, "keep_last": 1},
    {"schedule": "0 3 * * *", "keep_days": 1, "keep_last": 1, "extra": True},
    "daily",
])
async def test_a_bad_backup_policy_is_refused(api, backup):
    name = plan_name()
    response = await api.put(f"/v1/plans/{name}", json={"backup": backup})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert (await api.get(f"/v1/plans/{name}")).status_code == 404  # nothing was written
