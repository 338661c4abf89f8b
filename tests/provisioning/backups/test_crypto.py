"""The encrypted object: round trip; another tenant's key, a flipped byte, a cut or lengthened
object, a changed header or an unknown format all fail; a source that fails mid-way leaves
ciphertext that can never decrypt as complete."""

from __future__ import annotations

import os
import uuid

import pytest

from provisioning.backups.crypto import (
    HEADER_SIZE,
    BackupFormatError,
    BackupOfOtherTenant,
    DecryptionFailed,
    Header,
    WrongBackup,
    decrypt,
    encrypt,
    read_header,
)
from provisioning.backups.keys import DataKey
from tests.provisioning.backups.conftest import chunks_of, collect

MiB = 1 << 20


def key_for(tenant: uuid.UUID, version: int = 1) -> DataKey:
    return DataKey(tenant, version, os.urandom(32))


def lookup(*keys: DataKey):
    async def find(tenant_id: uuid.UUID, version: int) -> DataKey:
        for key in keys:
            if key.tenant_id == tenant_id and key.version == version:
                return key
        raise LookupError((tenant_id, version))
    return find


async def sealed(data: bytes, key: DataKey, backup: uuid.UUID) -> bytes:
    return await collect(encrypt(chunks_of(data, 300_000), key, backup))


async def opened(blob: bytes, *keys: DataKey, tenant: uuid.UUID, backup: uuid.UUID | None = None) -> bytes:
    return await collect(decrypt(chunks_of(blob, 250_000), lookup(*keys), tenant_id=tenant, backup_id=backup))


async def test_round_trip_and_header() -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant, 3)
    data = os.urandom(3 * MiB + 11)
    blob = await sealed(data, key, backup)
    header, _ = await read_header(chunks_of(blob))
    assert header == Header(tenant, backup, 3) and blob[:4] == b"TPBK"
    assert await opened(blob, key, tenant=tenant, backup=backup) == data
    assert await opened(await sealed(b"", key, backup), key, tenant=tenant) == b""


async def test_another_tenants_key_fails() -> None:
    a, b, backup = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    key_a, key_b = key_for(a), key_for(b)
    blob = await sealed(os.urandom(MiB), key_a, backup)
    with pytest.raises(BackupOfOtherTenant):
        await opened(blob, key_b, tenant=b)
    # the header rewritten to name tenant b: b's key does not open a's ciphertext
    forged = Header(b, backup, 1).pack() + blob[HEADER_SIZE:]
    with pytest.raises(DecryptionFailed):
        await opened(forged, key_b, tenant=b)
    with pytest.raises(WrongBackup):
        await opened(blob, key_a, tenant=a, backup=uuid.uuid4())


@pytest.mark.parametrize("where", [HEADER_SIZE + 5, HEADER_SIZE + 40, MiB // 2, -3])
async def test_a_flipped_byte_fails(where: int) -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant)
    blob = bytearray(await sealed(os.urandom(2 * MiB), key, backup))
    blob[where] ^= 0x04
    with pytest.raises(DecryptionFailed):
        await opened(bytes(blob), key, tenant=tenant)


async def test_a_changed_header_fails() -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    v1, v2 = key_for(tenant, 1), key_for(tenant, 2)
    blob = await sealed(os.urandom(MiB), v1, backup)
    other_backup = Header(tenant, uuid.uuid4(), 1).pack() + blob[HEADER_SIZE:]
    with pytest.raises(DecryptionFailed):
        await opened(other_backup, v1, tenant=tenant)
    other_version = Header(tenant, backup, 2).pack() + blob[HEADER_SIZE:]
    with pytest.raises(DecryptionFailed):
        await opened(other_version, v1, v2, tenant=tenant)
    with pytest.raises(BackupFormatError, match="version 9"):
        await opened(blob[:4] + b"\x09" + blob[5:], v1, tenant=tenant)
    with pytest.raises(BackupFormatError):
        await opened(b"PGDMP" + blob[5:], v1, tenant=tenant)


@pytest.mark.parametrize("cut", [1, 1000, (1 << 20) + 40])
async def test_a_cut_object_fails(cut: int) -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant)
    blob = await sealed(os.urandom(3 * MiB), key, backup)
    with pytest.raises(DecryptionFailed):
        await opened(blob[:-cut], key, tenant=tenant)
    with pytest.raises(BackupFormatError):
        await opened(blob[:HEADER_SIZE - 2], key, tenant=tenant)


async def test_bytes_after_the_end_fail() -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant)
    blob = await sealed(os.urandom(MiB), key, backup)
    with pytest.raises(DecryptionFailed):
        await opened(blob + b"extra", key, tenant=tenant)


async def test_a_source_that_fails_leaves_nothing_decryptable() -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant)
    produced = bytearray()

    async def breaking():
        yield os.urandom(3 * MiB)
        raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        async for chunk in encrypt(breaking(), key, backup):
            produced += chunk
    assert len(produced) > MiB  # whole segments went out before the failure
    with pytest.raises(DecryptionFailed):
        await opened(bytes(produced), key, tenant=tenant)


async def test_a_consumer_that_stops_early_ends_the_decryption_thread() -> None:
    tenant, backup = uuid.uuid4(), uuid.uuid4()
    key = key_for(tenant)
    blob = await sealed(os.urandom(8 * MiB), key, backup)
    stream = decrypt(chunks_of(blob), lookup(key), tenant_id=tenant)
    first = await anext(stream)
    assert first
    await stream.aclose()  # returns only once the thread has ended
    import threading
    assert not [t for t in threading.enumerate() if t.name == "backup-decrypt"]
