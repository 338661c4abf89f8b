"""A backup store in a local folder (`file:///path`); what it promises is in store.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

import msgspec

from provisioning.backups.objects import (
    READ_CHUNK,
    SIDECAR,
    TEMP_MARK,
    DigestMismatch,
    ObjectIncomplete,
    ObjectNotFound,
    Sidecar,
    StoredObject,
    StoreError,
    check_key,
    check_prefix,
    described,
    verified,
)


class FileStore:
    """Objects are files under `root`. A write goes to a temporary name in the object's own folder
    (same file system, so the rename is atomic), is fsynced, read back and checked, then renamed;
    the folder is fsynced so the rename survives a power cut."""

    kind = "file"

    def __init__(self, root: Path | str, *, verify_after_write: bool = True) -> None:
        self.root = Path(root)
        self.verify_after_write = verify_after_write

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        path = self._path(key)
        temp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")
        try:
            record = await self._write_temporary(path, temp, chunks)
            if self.verify_after_write:
                await asyncio.to_thread(_check_file, temp, record, key)
            await asyncio.to_thread(_write_durably, _sidecar_path(path), msgspec.json.encode(record))
            await asyncio.to_thread(_publish, temp, path)
        except BaseException as exc:
            await asyncio.to_thread(_remove_quietly, temp)
            if isinstance(exc, OSError):  # a full disk, a folder we may not write: say which object
                raise StoreError(f"writing {key} to the backup folder failed: {exc.strerror or exc}") from exc
            raise
        return StoredObject(key=key, size=record.size, complete=True, sha256=record.sha256)

    @staticmethod
    async def _write_temporary(path: Path, temp: Path, chunks: AsyncIterable[bytes]) -> Sidecar:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        handle = await asyncio.to_thread(open, temp, "xb")
        digest, size = hashlib.sha256(), 0

        def put(chunk: bytes) -> None:
            handle.write(chunk)
            digest.update(chunk)

        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(put, chunk)
                    size += len(chunk)
            await asyncio.to_thread(_flush_and_sync, handle)
        finally:
            await asyncio.to_thread(handle.close)
        return Sidecar(digest.hexdigest(), size)

    async def _sidecar(self, key: str) -> Sidecar | None:
        try:
            raw = await asyncio.to_thread(_sidecar_path(self._path(key)).read_bytes)
            return msgspec.json.decode(raw, type=Sidecar)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def head(self, key: str) -> StoredObject | None:
        try:
            size = (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None
        return described(key, size, await self._sidecar(key))

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        record = await self._sidecar(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None
        try:
            if record is None or record.size != os.fstat(handle.fileno()).st_size:
                raise ObjectIncomplete(f"object {key} has no matching digest recorded: it is not complete")
            async with aclosing(verified(key, _file_chunks(handle), record)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            await asyncio.to_thread(handle.close)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        # only the folder the prefix is in is walked (the reconciler lists one tenant's prefix at a time)
        folder = self.root / check_prefix(prefix).rpartition("/")[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return found
        for path in sorted(folder.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if not path.is_file() or path.name.startswith(".") or key.endswith(SIDECAR) \
                    or not key.startswith(check_prefix(prefix)):
                continue
            size = path.stat().st_size
            try:
                record = msgspec.json.decode(_sidecar_path(path).read_bytes(), type=Sidecar)
            except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
                record = None
            found.append(described(key, size, record))
        return found

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)  # the object first: never one without its digest
        await asyncio.to_thread(_sidecar_path(path).unlink, missing_ok=True)

    async def clean_stale(self, older_than_seconds: float) -> int:
        """Temporaries and sidecars without an object, older than the given age (younger ones may
        belong to a write still under way)."""
        return await asyncio.to_thread(self._clean, time.time() - older_than_seconds)

    def _clean(self, before: float) -> int:
        removed = 0
        if not self.root.exists():
            return 0
        for path in list(self.root.rglob("*")):
            if not path.is_file():
                continue
            orphan = path.name.endswith(SIDECAR) and not path.with_name(path.name[:-len(SIDECAR)]).exists()
            try:
                if (TEMP_MARK in path.name or orphan) and path.stat().st_mtime < before:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


async def _file_chunks(handle: Any) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
        yield chunk


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def _remove_quietly(path: Path) -> None:
    with suppress(OSError):
        path.unlink(missing_ok=True)


def _flush_and_sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _check_file(path: Path, expected: Sidecar, key: str) -> None:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise DigestMismatch(f"object {key} read back differs from what was written")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            _flush_and_sync(handle)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _publish(temp: Path, path: Path) -> None:
    os.replace(temp, path)
    _sync_folder(path.parent)
