"""Keys and stored backups together: rotation keeps old backups readable, destroying a tenant's
keys makes all of its backups unreadable with a clear error and leaves other tenants' alone."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest

from provisioning.backups.crypto import BackupOfOtherTenant, decrypt, encrypt
from provisioning.backups.keys import KeyDestroyed, Keyring, LocalKeyWrapper, TenantKeys
from provisioning.backups.store import FileStore
from tests.provisioning.backups.conftest import chunks_of, collect, new_tenant


async def back_up(store: FileStore, keys: TenantKeys, tenant: uuid.UUID, data: bytes) -> str:
    backup = uuid.uuid4()
    name = f"tenants/{tenant}/{backup}.tpbk"
    await store.write(name, encrypt(chunks_of(data), await keys.current(tenant), backup))
    return name


async def restored(store: FileStore, keys: TenantKeys, tenant: uuid.UUID, name: str) -> bytes:
    return await collect(decrypt(store.read(name), keys.get, tenant_id=tenant))


async def test_rotation_and_destruction(catalog: asyncpg.Pool, tmp_path: Path) -> None:
    keys = TenantKeys(catalog, Keyring(LocalKeyWrapper.from_file(tmp_path / "master.key", create=True)))
    store = FileStore(tmp_path / "store")
    tenant, other = await new_tenant(catalog), await new_tenant(catalog)
    old_data, new_data, other_data = os.urandom(1 << 20), os.urandom(1 << 20), os.urandom(1000)
    old = await back_up(store, keys, tenant, old_data)
    await keys.rotate(tenant)
    new = await back_up(store, keys, tenant, new_data)
    theirs = await back_up(store, keys, other, other_data)
    assert await restored(store, keys, tenant, old) == old_data  # under version 1
    assert await restored(store, keys, tenant, new) == new_data  # under version 2
    with pytest.raises(BackupOfOtherTenant):
        await restored(store, keys, other, old)

    await keys.destroy(tenant)
    for name in (old, new):
        with pytest.raises(KeyDestroyed, match=f"tenant {tenant} were destroyed"):
            await restored(store, keys, tenant, name)
    assert await restored(store, keys, other, theirs) == other_data
    assert (await store.head(old)).complete  # the objects are intact; only unreadable
