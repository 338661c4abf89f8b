"""A worker SIGKILLed while it makes a tenant's KMS key (a first backup with BACKUP_KMS_KEY_PER_TENANT):
between CreateKey and recording the key id (so with no alias either), and between the record and
CreateAlias. A restarted worker finishes the backup under that same key: one key carries the
tenant's tag, the alias points at it, the catalog records it, and the backup restores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, admin_client, stop_process, unique_slug
from tests.provisioning.backups.test_tenant_kms import tagged_keys
from tests.provisioning.test_crash_recovery import kill_at_then_finish
from tests.provisioning.test_erasure import _op_done, active
from tests.provisioning.test_erasure_kms import (  # noqa: F401 (fixtures: the moto server, its settings)
    kms,
    kms_env,
    kms_key_of,
    kms_stack_on,
    moto_endpoint,
)


@pytest.fixture(scope="module")
async def crash_kms_stack(pg, redis_server, kms_env) -> Stack:  # noqa: F811
    return await kms_stack_on(pg, redis_server.url, "catalog_tenant_kms_crash")


@pytest.fixture(scope="module")
async def crash_kms_api(crash_kms_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(crash_kms_stack) as client:
        yield client


@pytest.mark.parametrize("point", ["kms:record_key", pytest.param("kms:create_alias", marks=pytest.mark.chaos)])
async def test_a_kill_while_making_the_tenants_kms_key_leaves_one_key(
        point: str, crash_kms_stack: Stack, crash_kms_api: httpx.AsyncClient, kms_env: dict[str, str],  # noqa: F811
        kms: Any):  # noqa: F811
    worker = crash_kms_stack.start_worker(**kms_env)
    try:
        tenant = await active(crash_kms_api, unique_slug("kk"), "KMS crash", "dedicated")
    finally:
        stop_process(worker)
    r = await crash_kms_api.post(f"/v1/tenants/{tenant['id']}/backups")
    assert r.status_code == 202, r.text

    async def finished() -> dict | None:
        op = (await crash_kms_api.get(f"/v1/operations/{r.json()['operation_id']}")).json()
        return op if op["state"] in ("succeeded", "failed") else None

    op = await kill_at_then_finish(crash_kms_stack, point, finished, **kms_env)
    assert op["state"] == "succeeded", op  # type: ignore[index]
    key_id = await kms_key_of(crash_kms_stack, tenant["id"])
    assert tagged_keys(kms, tenant["id"]) == [(key_id, "Enabled")]  # the killed worker's key, adopted
    assert kms.describe_key(KeyId=f"alias/tenantplane/{tenant['id']}")["KeyMetadata"]["Arn"] == key_id
    worker = crash_kms_stack.start_worker(**kms_env)
    try:
        drill = await crash_kms_api.post(f"/v1/backups/{r.json()['backup']['id']}/verify")
        assert (await _op_done(crash_kms_api, drill.json()["operation_id"]))["state"] == "succeeded"
    finally:
        stop_process(worker)
