"""Per-tenant KMS keys (moto's KMS over HTTP): made once per tenant, tagged and aliased; a rerun after
a crash anywhere in the making adopts the key instead of orphaning it; two tenants' backups are
wrapped under two keys; destroying a tenant's keys schedules its KMS key's deletion with the window,
and our catalog refuses its backups although KMS (moto) would still decrypt."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from provisioning.backups.crypto import decrypt, encrypt
from provisioning.backups.keys import KeyDestroyed, Keyring, LocalKeyWrapper, TenantKeys, _context
from provisioning.backups.store import FileStore, aws_client
from provisioning.backups.tenant_kms import TAG_KEY, TenantKmsKeys, alias_of
from tests.provisioning.backups.conftest import chunks_of, collect, new_tenant


@pytest.fixture
def kms(moto_endpoint: str) -> Any:
    return aws_client("kms", endpoint_url=moto_endpoint)


def per_tenant_keys(catalog: asyncpg.Pool, kms: Any, tmp_path: Path, window: int = 9) -> TenantKeys:
    keyring = Keyring(LocalKeyWrapper.from_file(tmp_path / "master.key", create=True),
                      tenant_kms=TenantKmsKeys(lambda: kms, deletion_window_days=window), per_tenant=True)
    return TenantKeys(catalog, keyring)


def tagged_keys(kms: Any, tenant: uuid.UUID) -> list[str]:
    """Every key of moto's account carrying the tenant's tag, with its state."""
    found = []
    for entry in kms.list_keys(Limit=1000)["Keys"]:
        if {"TagKey": TAG_KEY, "TagValue": str(tenant)} in kms.list_resource_tags(KeyId=entry["KeyId"])["Tags"]:
            meta = kms.describe_key(KeyId=entry["KeyId"])["KeyMetadata"]
            found.append((meta["Arn"], meta["KeyState"]))
    return sorted(found)


async def wrapper_key(catalog: asyncpg.Pool, tenant: uuid.UUID) -> set[tuple[str, str]]:
    rows = await catalog.fetch("SELECT wrapper_kind, wrapper_key_id FROM tenant_keys WHERE tenant_id = $1", tenant)
    return {tuple(r) for r in rows}


async def test_a_tenant_gets_one_key_of_its_own_however_often_asked(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path)
    tenant = await new_tenant(catalog)
    first = await keys.current(tenant)
    await keys.rotate(tenant)
    assert (await keys.current(tenant)).version == 2 and (await keys.get(tenant, 1)).material == first.material
    [(arn, state)] = tagged_keys(kms, tenant)
    assert state == "Enabled" and await wrapper_key(catalog, tenant) == {("kms_tenant", arn)}
    assert kms.describe_key(KeyId=alias_of(tenant))["KeyMetadata"]["Arn"] == arn
    row = await catalog.fetchrow("SELECT key_id, alias, aliased_at FROM tenant_kms_keys WHERE tenant_id = $1", tenant)
    assert (row["key_id"], row["alias"]) == (arn, f"alias/tenantplane/{tenant}") and row["aliased_at"] is not None
    # a second process (another worker, the API) finds the same key
    assert (await per_tenant_keys(catalog, kms, tmp_path).get(tenant, 2)).version == 2
    assert len(tagged_keys(kms, tenant)) == 1


async def test_a_rerun_after_a_crash_between_create_key_and_create_alias_adopts_the_key(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path)
    # what a process killed right after CreateKey leaves: the intent row (no key id), a tagged key, no alias
    tenant = await new_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", tenant, alias_of(tenant))
    made = kms.create_key(Tags=[{"TagKey": TAG_KEY, "TagValue": str(tenant)}])["KeyMetadata"]["Arn"]
    await keys.current(tenant)
    assert tagged_keys(kms, tenant) == [(made, "Enabled")]  # no second key
    assert await wrapper_key(catalog, tenant) == {("kms_tenant", made)}
    assert kms.describe_key(KeyId=alias_of(tenant))["KeyMetadata"]["Arn"] == made

    # killed after the key id was recorded, before the alias: the alias is made on the next use
    second = await new_tenant(catalog)
    recorded = kms.create_key(Tags=[{"TagKey": TAG_KEY, "TagValue": str(second)}])["KeyMetadata"]["Arn"]
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias, key_id) VALUES ($1, $2, $3)",
                          second, alias_of(second), recorded)
    await keys.current(second)
    assert kms.describe_key(KeyId=alias_of(second))["KeyMetadata"]["Arn"] == recorded
    assert tagged_keys(kms, second) == [(recorded, "Enabled")]

    # killed after the intent, before CreateKey: a key is made then
    third = await new_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", third, alias_of(third))
    await keys.current(third)
    [(arn, _)] = tagged_keys(kms, third)
    assert await wrapper_key(catalog, third) == {("kms_tenant", arn)}


async def test_two_crashed_attempts_keep_one_key_and_schedule_the_other_for_deletion(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path)
    tenant = await new_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", tenant, alias_of(tenant))
    made = sorted(kms.create_key(Tags=[{"TagKey": TAG_KEY, "TagValue": str(tenant)}])["KeyMetadata"]["Arn"]
                  for _ in range(2))
    await keys.current(tenant)
    assert tagged_keys(kms, tenant) == [(made[0], "Enabled"), (made[1], "PendingDeletion")]
    assert await wrapper_key(catalog, tenant) == {("kms_tenant", made[0])}


async def test_two_tenants_backups_are_wrapped_under_different_keys(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path)
    store = FileStore(tmp_path / "store")
    a, b = await new_tenant(catalog), await new_tenant(catalog)
    data = {a: os.urandom(100_000), b: os.urandom(100_000)}
    names = {}
    for tenant in (a, b):
        backup = uuid.uuid4()
        names[tenant] = f"tenants/{tenant}/backups/{backup}.tpbk"
        await store.write(names[tenant], encrypt(chunks_of(data[tenant]), await keys.current(tenant), backup))
    [(kind_a, key_a)], [(kind_b, key_b)] = await wrapper_key(catalog, a), await wrapper_key(catalog, b)
    assert kind_a == kind_b == "kms_tenant" and key_a != key_b
    for tenant in (a, b):
        assert await collect(decrypt(store.read(names[tenant]), keys.get, tenant_id=tenant)) == data[tenant]
    # the wrapped key of a, put on b's row, does not unwrap under b's KMS key and context
    wrapped = await catalog.fetchval("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1", a)
    with pytest.raises(Exception, match="InvalidCiphertext|IncorrectKey|AccessDenied"):
        kms.decrypt(CiphertextBlob=wrapped, KeyId=key_b, EncryptionContext=_context(b, 1))


async def test_destroying_keys_schedules_the_kms_key_and_the_catalog_refuses_its_backups(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path, window=9)
    store = FileStore(tmp_path / "store")
    tenant = await new_tenant(catalog)
    backup = uuid.uuid4()
    name = f"tenants/{tenant}/backups/{backup}.tpbk"
    await store.write(name, encrypt(chunks_of(b"rows" * 1000), await keys.current(tenant), backup))
    wrapped = await catalog.fetchval("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1", tenant)

    assert await keys.destroy(tenant) == 1
    before = dt.datetime.now(dt.UTC)
    key_id, when = await keys.schedule_kms_deletion(tenant)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert abs((when - before) - dt.timedelta(days=9)) < dt.timedelta(minutes=5), when
    assert kms.list_aliases(KeyId=key_id)["Aliases"] == []  # the alias naming the tenant is gone
    assert await keys.schedule_kms_deletion(tenant) == (key_id, when)  # a rerun: the recorded answer

    # moto still decrypts with a key pending deletion; our catalog refuses regardless
    assert len(kms.decrypt(CiphertextBlob=wrapped, KeyId=key_id, EncryptionContext=_context(tenant, 1))["Plaintext"]) == 32
    with pytest.raises(KeyDestroyed, match="destroyed"):
        await collect(decrypt(store.read(name), keys.get, tenant_id=tenant))
    with pytest.raises(KeyDestroyed):
        await keys.rotate(tenant)


async def test_a_crash_between_schedule_key_deletion_and_its_record_is_finished_by_a_rerun(catalog, kms, tmp_path):
    keys = per_tenant_keys(catalog, kms, tmp_path, window=30)
    tenant = await new_tenant(catalog)
    await keys.current(tenant)
    key_id = await catalog.fetchval("SELECT key_id FROM tenant_kms_keys WHERE tenant_id = $1", tenant)
    date = kms.schedule_key_deletion(KeyId=key_id.rsplit("/", 1)[-1], PendingWindowInDays=30)["DeletionDate"]  # killed
    assert await keys.schedule_kms_deletion(tenant) == (key_id, date)
    assert await catalog.fetchval("SELECT deletion_date FROM tenant_kms_keys WHERE tenant_id = $1", tenant) == date
    # a creation killed between CreateKey and recording its id, then the keys destroyed: the key is found
    crashed = await new_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", crashed, alias_of(crashed))
    made = kms.create_key(Tags=[{"TagKey": TAG_KEY, "TagValue": str(crashed)}])["KeyMetadata"]["Arn"]
    await keys.destroy(crashed)
    assert (await keys.schedule_kms_deletion(crashed))[0] == made
    assert tagged_keys(kms, crashed) == [(made, "PendingDeletion")]
    # the intent alone (killed before CreateKey): nothing was made, nothing is scheduled, the row goes
    intent = await new_tenant(catalog)
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", intent, alias_of(intent))
    assert await keys.schedule_kms_deletion(intent) is None
    assert await catalog.fetchval("SELECT count(*) FROM tenant_kms_keys WHERE tenant_id = $1", intent) == 0
    # a tenant that never had a key of its own: nothing to schedule
    assert await keys.schedule_kms_deletion(await new_tenant(catalog)) is None


def test_a_window_kms_would_refuse_is_refused():
    for days in (6, 31):
        with pytest.raises(ValueError, match="7-30 days"):
            TenantKmsKeys(lambda: None, deletion_window_days=days)


async def test_rewrap_moves_existing_keys_under_each_tenants_own(catalog, kms, tmp_path):
    local = LocalKeyWrapper.from_file(tmp_path / "master.key", create=True)
    tenant = await new_tenant(catalog)
    before = await TenantKeys(catalog, Keyring(local)).current(tenant)  # made before the setting was on
    keys = per_tenant_keys(catalog, kms, tmp_path)
    assert (await keys.current(tenant)).material == before.material  # still readable, not re-made
    assert await keys.rewrap(tenant) == 1
    [(arn, _)] = tagged_keys(kms, tenant)
    assert await wrapper_key(catalog, tenant) == {("kms_tenant", arn)}
    assert (await keys.get(tenant, 1)).material == before.material
    assert await keys.rewrap(tenant) == 0
