"""Tenant data keys in the catalog: made lazily, rotated (old versions kept), re-wrapped under a
new master key, bound to their tenant, destroyed for good; wrapped locally or by KMS (moto)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from provisioning.backups.keys import (
    KeyDestroyed,
    KeyNotFound,
    Keyring,
    KeyUnavailable,
    KmsKeyWrapper,
    LocalKeyWrapper,
    TenantKeys,
    keyring_from_settings,
    load_master_key,
)
from provisioning.backups.store import aws_client
from tests.provisioning.backups.conftest import new_tenant


def local(tmp_path: Path, name: str = "master.key") -> LocalKeyWrapper:
    return LocalKeyWrapper.from_file(tmp_path / name, create=True)


async def test_keys_are_made_lazily_and_rotation_keeps_old_versions(catalog: asyncpg.Pool, tmp_path: Path) -> None:
    keys = TenantKeys(catalog, Keyring(local(tmp_path)))
    tenant = await new_tenant(catalog)
    first = await keys.current(tenant)
    assert first.version == 1 and len(first.material) == 32
    assert (await keys.current(tenant)).material == first.material
    second = await keys.rotate(tenant)
    assert second.version == 2 and second.material != first.material
    assert (await keys.current(tenant)).version == 2
    assert (await keys.get(tenant, 1)).material == first.material
    with pytest.raises(KeyNotFound):
        await keys.get(tenant, 3)
    assert "material" not in repr(first) and first.material.hex() not in repr(first)
    wrapped = await catalog.fetchval("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1 AND version = 1", tenant)
    assert first.material not in wrapped  # stored only wrapped


async def test_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "master.key"
    key = load_master_key(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600 and load_master_key(path) == key
    path.write_text("not a key")
    with pytest.raises(KeyUnavailable):
        load_master_key(path)


async def test_rewrap_under_a_new_master_key(catalog: asyncpg.Pool, tmp_path: Path) -> None:
    old, new = local(tmp_path, "old.key"), local(tmp_path, "new.key")
    tenant = await new_tenant(catalog)
    before = TenantKeys(catalog, Keyring(old))
    v1 = await before.current(tenant)
    v2 = await before.rotate(tenant)
    with pytest.raises(KeyUnavailable, match="not configured"):
        await TenantKeys(catalog, Keyring(new)).get(tenant, 1)
    assert await TenantKeys(catalog, Keyring(new, retired=[old])).rewrap(tenant) == 2
    after = TenantKeys(catalog, Keyring(new))  # the old master key is gone now
    assert (await after.get(tenant, 1)).material == v1.material
    assert (await after.get(tenant, 2)).material == v2.material
    assert await after.rewrap(tenant) == 0


async def test_a_wrapped_key_moved_to_another_tenant_does_not_unwrap(catalog: asyncpg.Pool, tmp_path: Path) -> None:
    keys = TenantKeys(catalog, Keyring(local(tmp_path)))
    a, b = await new_tenant(catalog), await new_tenant(catalog)
    await keys.current(a)
    await keys.current(b)
    await catalog.execute("UPDATE tenant_keys SET wrapped_key = (SELECT wrapped_key FROM tenant_keys "
                          "WHERE tenant_id = $1 AND version = 1) WHERE tenant_id = $2", a, b)
    with pytest.raises(KeyUnavailable, match="does not unwrap"):
        await keys.get(b, 1)


async def test_destroyed_keys_stay_destroyed(catalog: asyncpg.Pool, tmp_path: Path) -> None:
    keys = TenantKeys(catalog, Keyring(local(tmp_path)))
    tenant, other = await new_tenant(catalog), await new_tenant(catalog)
    await keys.current(tenant)
    await keys.rotate(tenant)
    await keys.current(other)
    assert await keys.destroy(tenant) == 2
    for attempt in (keys.get(tenant, 1), keys.get(tenant, 2), keys.current(tenant), keys.rotate(tenant)):
        with pytest.raises(KeyDestroyed, match="destroyed"):
            await attempt
    assert await catalog.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = $1 AND wrapped_key IS NOT NULL",
                                  tenant) == 0
    assert (await keys.get(other, 1)).version == 1  # nobody else's keys are touched
    never = await new_tenant(catalog)
    await keys.destroy(never)  # a tenant that never had a key gets none afterwards either
    with pytest.raises(KeyDestroyed):
        await keys.current(never)


async def test_kms_wrapped_keys(catalog: asyncpg.Pool, moto_endpoint: str, kms_key: str, tmp_path: Path) -> None:
    kms = KmsKeyWrapper(aws_client("kms", endpoint_url=moto_endpoint), kms_key)
    keys = TenantKeys(catalog, Keyring(kms))
    tenant, other = await new_tenant(catalog), await new_tenant(catalog)
    first = await keys.current(tenant)
    assert (await keys.get(tenant, 1)).material == first.material
    row = await catalog.fetchrow("SELECT wrapper_kind, wrapper_key_id FROM tenant_keys WHERE tenant_id = $1", tenant)
    assert tuple(row) == ("kms", kms_key)
    await keys.current(other)
    await catalog.execute("UPDATE tenant_keys SET wrapped_key = (SELECT wrapped_key FROM tenant_keys "
                          "WHERE tenant_id = $1 AND version = 1) WHERE tenant_id = $2", tenant, other)
    with pytest.raises(KeyUnavailable, match="KMS could not unwrap"):  # the encryption context differs
        await keys.get(other, 1)
    # from a local master key to KMS: re-wrapped, same data keys
    old = local(tmp_path, "before-kms.key")
    moving = await new_tenant(catalog)
    made = await TenantKeys(catalog, Keyring(old)).current(moving)
    keyring = keyring_from_settings(kms_key_id=kms_key, master_key_file=tmp_path / "before-kms.key",
                                    kms_endpoint_url=moto_endpoint)
    assert await TenantKeys(catalog, keyring).rewrap(moving) == 1
    assert (await TenantKeys(catalog, Keyring(kms)).get(moving, 1)).material == made.material
