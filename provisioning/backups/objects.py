"""What every backup store shares: the object description, the errors, key rules, and the digest
recorded beside each object (`<key>.sha256`, JSON: sha256, size) with its check on read. The
stores themselves are in file_store.py and store.py (S3); store.py says what both promise."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing
from typing import Protocol

import msgspec

READ_CHUNK = 1 << 20
SIDECAR = ".sha256"
TEMP_MARK = ".tmp-"
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


class StoreError(Exception):
    """A store refused or failed; messages name the key, never a credential."""


class ObjectNotFound(StoreError):
    pass


class ObjectIncomplete(StoreError):
    """The object has no digest recorded with it, or one that disagrees with its size."""


class DigestMismatch(StoreError):
    """The stored bytes are not the bytes whose digest was recorded: changed, or cut short."""


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    complete: bool  # a digest is recorded beside it (head() and read() also check it agrees)
    sha256: str | None = None  # from head() and write(); list() leaves it out on S3 (one GET each)


class Sidecar(msgspec.Struct, frozen=True):
    sha256: str
    size: int


class BackupStore(Protocol):
    kind: str  # "file" | "s3", as the catalog records it

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject: ...
    def read(self, key: str) -> AsyncIterator[bytes]: ...
    async def head(self, key: str) -> StoredObject | None: ...
    async def list(self, prefix: str = "") -> list[StoredObject]: ...
    async def delete(self, key: str) -> None: ...
    async def clean_stale(self, older_than_seconds: float) -> int: ...


def check_prefix(prefix: str) -> str:
    if prefix and (".." in prefix.split("/") or prefix.startswith("/")):
        raise StoreError(f"not a valid key prefix: {prefix!r}")
    return prefix


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: no '..', no absolute path, nothing that could be
    taken for a sidecar or a temporary."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or len(key) > 512 or key.endswith(SIDECAR) \
            or TEMP_MARK in key or any(part in (".", "..") for part in key.split("/")):
        raise StoreError(f"not a valid object key: {key!r}")
    return key


async def verified(key: str, chunks: AsyncIterator[bytes], expected: Sidecar) -> AsyncIterator[bytes]:
    """`chunks` passed through, then checked against the recorded digest and size."""
    digest, size = hashlib.sha256(), 0
    async with aclosing(chunks):
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if size > expected.size:
                raise DigestMismatch(f"object {key} is longer than recorded")
            yield chunk
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise DigestMismatch(f"object {key} does not match its recorded digest ({size} of {expected.size} bytes)")


def described(key: str, size: int, record: Sidecar | None) -> StoredObject:
    if record is None or record.size != size:
        return StoredObject(key=key, size=size, complete=False)
    return StoredObject(key=key, size=size, complete=True, sha256=record.sha256)
