"""The encrypted backup object: a versioned header, then Tink StreamingAead ciphertext.

Library choice: Tink's StreamingAead with AES256_GCM_HKDF_1MB (PyPI `tink`). Each object gets its
own key derived by HKDF from the tenant's data key and a random salt, so one data key safely
encrypts any number of backups; the plaintext is cut into 1 MiB segments, each authenticated with
AES-GCM and numbered, the last one marked as last, so a changed, reordered, dropped or cut-off
segment fails decryption; memory is a segment or two whatever the size. aws-encryption-sdk's framed
messages (with an unsigned key-committing suite) install and work here too, but every message
carries its own wrapped data keys and the SDK depends on boto3 itself; with Tink the keys stay in
one place, the catalog's `tenant_keys` (keys.py), which is what makes destroying them shred every
backup, and boto3 stays in store.py alone.

Object layout, format version 1 (integers big-endian):

    offset  size  field
    0       4     magic b"TPBK"
    4       1     format version (1)
    5       1     payload: 1 = pg_dump custom-format archive, 2 = shared-tier archive (shared_archive.py)
    6       4     key version: which of the tenant's data keys (tenant_keys.version)
    10      16    tenant id (UUID)
    26      16    backup id (UUID)
    42      ...   Tink StreamingAead ciphertext of the payload, associated data = bytes 0..41

The whole header is the associated data, so tenant id, backup id, payload kind and key version are
authenticated with the ciphertext: an object moved to another tenant or backup, or given another
key version, does not decrypt. A reader refuses a format version it does not know before anything
else; a new version can change everything after byte 5.
"""

from __future__ import annotations

import asyncio
import io
import struct
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import tink
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from provisioning.backups.keys import DataKey
from provisioning.backups.streams import closing, through_thread

MAGIC = b"TPBK"
FORMAT_VERSION = 1
PAYLOAD_PG_DUMP = 1
PAYLOAD_SHARED_ARCHIVE = 2
_HEADER = struct.Struct(">4sBBI16s16s")
HEADER_SIZE = _HEADER.size  # 42
SEGMENT_SIZE = 1 << 20  # AES256_GCM_HKDF_1MB
_KEY_TYPE = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"

streaming_aead.register()


class BackupCryptoError(Exception):
    """Messages name tenants, backups and versions; never key material."""


class BackupFormatError(BackupCryptoError):
    """Not a backup object of ours, or a format version this code does not know."""


class BackupOfOtherTenant(BackupCryptoError):
    pass


class WrongBackup(BackupCryptoError):
    """The object's header names another backup id than the one asked for."""


class DecryptionFailed(BackupCryptoError):
    """Authentication failed: another key, or the object was changed or cut short."""


@dataclass(frozen=True)
class Header:
    tenant_id: uuid.UUID
    backup_id: uuid.UUID
    key_version: int
    payload: int = PAYLOAD_PG_DUMP
    format_version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, self.format_version, self.payload, self.key_version,
                            self.tenant_id.bytes, self.backup_id.bytes)

    @classmethod
    def unpack(cls, raw: bytes) -> "Header":
        if len(raw) < 6 or raw[:4] != MAGIC:
            raise BackupFormatError("not a tenantplane backup object")
        if raw[4] != FORMAT_VERSION:
            raise BackupFormatError(f"backup format version {raw[4]} is not known to this version of tenantplane")
        if len(raw) < HEADER_SIZE:
            raise BackupFormatError("the backup object is cut short inside its header")
        _, version, payload, key_version, tenant, backup = _HEADER.unpack(raw[:HEADER_SIZE])
        return cls(uuid.UUID(bytes=tenant), uuid.UUID(bytes=backup), key_version, payload, version)


def _primitive(material: bytes) -> Any:
    """A Tink StreamingAead on the tenant's raw data key: a one-key keyset with the parameters of
    the AES256_GCM_HKDF_1MB template (HKDF-SHA256, 32-byte derived keys, 1 MiB segments)."""
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0, key_value=material,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=SEGMENT_SIZE, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256))
    keyset = tink_pb2.Keyset(primary_key_id=1, key=[tink_pb2.Keyset.Key(
        key_data=tink_pb2.KeyData(type_url=_KEY_TYPE, value=key.SerializeToString(),
                                  key_material_type=tink_pb2.KeyData.SYMMETRIC),
        status=tink_pb2.ENABLED, key_id=1, output_prefix_type=tink_pb2.RAW)])
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


class _Sink(io.RawIOBase):
    """Where Tink writes ciphertext; drained after every write, so it holds a segment at most."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def close(self) -> None:  # Tink closes its destination when it closes; what was written stays
        pass

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


async def encrypt(source: AsyncIterable[bytes], key: DataKey, backup_id: uuid.UUID, *,
                  payload: int = PAYLOAD_PG_DUMP) -> AsyncIterator[bytes]:
    """The object for `source` under `key`: the header, then ciphertext as it is produced. When
    `source` fails the stream is never closed, so no final segment is written: what was yielded
    so far can never decrypt as a complete backup."""
    header = Header(uuid.UUID(str(key.tenant_id)), uuid.UUID(str(backup_id)), key.version, payload).pack()
    yield header
    sink = _Sink()
    stream = _primitive(key.material).new_encrypting_stream(sink, header)
    async with closing(source):
        async for chunk in source:
            if chunk:
                await asyncio.to_thread(stream.write, chunk)  # AES-GCM of a segment: off the loop
                if out := sink.take():
                    yield out
    await asyncio.to_thread(stream.close)  # the last segment, marked as last
    if out := sink.take():
        yield out


KeyLookup = Callable[[uuid.UUID, int], Awaitable[DataKey]]


async def read_header(source: AsyncIterable[bytes]) -> tuple[Header, AsyncIterator[bytes]]:
    """The header of an object, and the rest of the stream after it."""
    iterator = aiter(source)
    buffered = b""
    while len(buffered) < HEADER_SIZE:
        try:
            buffered += await anext(iterator)
        except StopAsyncIteration:
            break
    header = Header.unpack(buffered)

    async def rest() -> AsyncIterator[bytes]:
        async with closing(iterator):
            if len(buffered) > HEADER_SIZE:
                yield buffered[HEADER_SIZE:]
            async for chunk in iterator:
                yield chunk

    return header, rest()


async def decrypt(source: AsyncIterable[bytes], keys: KeyLookup, *, tenant_id: uuid.UUID,
                  backup_id: uuid.UUID | None = None) -> AsyncIterator[bytes]:
    """The payload of an object of `tenant_id`'s (and of `backup_id`, when given), in bounded memory.
    The stream raises `DecryptionFailed` at the point where authentication fails, which for a cut
    object is at its end: a consumer must treat what it received as void unless the stream ended
    without an error (pg_restore --single-transaction and the shared-archive loader do)."""
    tenant_id = uuid.UUID(str(tenant_id))
    header, rest = await read_header(source)
    if header.tenant_id != tenant_id:
        raise BackupOfOtherTenant(f"backup {header.backup_id} belongs to tenant {header.tenant_id}, not {tenant_id}")
    if backup_id is not None and header.backup_id != backup_id:
        raise WrongBackup(f"the object holds backup {header.backup_id}, not {backup_id}")
    key = await keys(tenant_id, header.key_version)
    primitive = _primitive(key.material)
    associated = header.pack()

    def work(reader: Any, write: Callable[[bytes], None]) -> None:
        try:
            plain = primitive.new_decrypting_stream(reader, associated)
            while chunk := plain.read(SEGMENT_SIZE):
                write(chunk)
        except tink.TinkError as exc:
            raise DecryptionFailed(f"backup {header.backup_id} of tenant {tenant_id} did not decrypt: "
                                   "another key, or the object was changed or cut short") from exc
        if reader.readinto(bytearray(1)):
            raise DecryptionFailed(f"backup {header.backup_id} has bytes after its last segment")

    async with aclosing(through_thread(rest, work, name="backup-decrypt")) as plain:
        async for chunk in plain:
            yield chunk
