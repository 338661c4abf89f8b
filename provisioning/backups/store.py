"""Where backup objects live: a local folder (`file:///path`) or S3 (`s3://bucket/prefix`).

This is the only module that imports boto3 (S3 here, and the KMS client that keys.py wraps data
keys with: `aws_client("kms")`). boto3 is synchronous, so every call runs in a thread and the
streams between the event loop and those threads are bounded.

What both stores promise:
- `write(key, chunks)` streams an async iterator of bytes into the object with bounded memory and
  computes the sha256 of the stored bytes on the way. The digest is recorded beside the object in
  a small sidecar, `<key>.sha256` (JSON: sha256, size), and **an object is complete only when its
  sidecar is there and agrees with it**. The sidecar is written before the object becomes visible
  under its name, so an object that can be seen under its name always has its digest; a crash
  anywhere before that leaves nothing under the name (a temporary file, or an S3 multipart upload
  that was never completed), and a crash in between leaves a sidecar without an object, which
  `head()` and `list()` do not count. `clean_stale()` removes what crashes leave.
- the digest is checked after the write: the file store reads the file back before renaming it;
  S3 checks the completed object's multipart ETag against the MD5s of the parts we sent (S3 itself
  checks each part's checksum as it arrives) and its size.
- `read(key)` streams the object and checks size and digest against the sidecar when the stream
  ends: a changed or cut-short object raises `DigestMismatch` instead of ending quietly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import msgspec
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from provisioning.backups.streams import iterate_in_thread

READ_CHUNK = 1 << 20
SIDECAR = ".sha256"
_TEMP_MARK = ".tmp-"
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")

# S3 allows at most 10,000 parts per multipart upload, so a streamed upload of unknown size caps
# the object at 10,000 x the part size: 64 MiB parts allow 625 GiB per backup (tenant dumps are
# compressed, so a much larger database). Memory is at most two parts (one filling while the one
# before uploads), 128 MiB at the default; choose `?part_size_mb=` on the URL for other trade-offs.
DEFAULT_PART_SIZE = 64 << 20
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
MAX_PARTS = 10_000


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


class _Sidecar(msgspec.Struct, frozen=True):
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


def _check_prefix(prefix: str) -> str:
    if prefix and (".." in prefix.split("/") or prefix.startswith("/")):
        raise StoreError(f"not a valid key prefix: {prefix!r}")
    return prefix


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: no '..', no absolute path, nothing that could be
    taken for a sidecar or a temporary."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or len(key) > 512 or key.endswith(SIDECAR) \
            or _TEMP_MARK in key or any(part in (".", "..") for part in key.split("/")):
        raise StoreError(f"not a valid object key: {key!r}")
    return key


async def verified(key: str, chunks: AsyncIterator[bytes], expected: _Sidecar) -> AsyncIterator[bytes]:
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


# -- a local folder ----------------------------------------------------------------------------------
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
        temp = path.with_name(f".{path.name}{_TEMP_MARK}{secrets.token_hex(6)}")
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
    async def _write_temporary(path: Path, temp: Path, chunks: AsyncIterable[bytes]) -> _Sidecar:
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
        return _Sidecar(digest.hexdigest(), size)

    async def _sidecar(self, key: str) -> _Sidecar | None:
        try:
            raw = await asyncio.to_thread(_sidecar_path(self._path(key)).read_bytes)
            return msgspec.json.decode(raw, type=_Sidecar)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def head(self, key: str) -> StoredObject | None:
        try:
            size = (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None
        return _described(key, size, await self._sidecar(key))

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
        found = []
        if not self.root.exists():
            return found
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if not path.is_file() or path.name.startswith(".") or key.endswith(SIDECAR) \
                    or not key.startswith(_check_prefix(prefix)):
                continue
            size = path.stat().st_size
            try:
                record = msgspec.json.decode(_sidecar_path(path).read_bytes(), type=_Sidecar)
            except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
                record = None
            found.append(_described(key, size, record))
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
                if (_TEMP_MARK in path.name or orphan) and path.stat().st_mtime < before:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def _described(key: str, size: int, record: _Sidecar | None) -> StoredObject:
    if record is None or record.size != size:
        return StoredObject(key=key, size=size, complete=False)
    return StoredObject(key=key, size=size, complete=True, sha256=record.sha256)


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


def _check_file(path: Path, expected: _Sidecar, key: str) -> None:
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
    temp = path.with_name(f".{path.name}{_TEMP_MARK}{secrets.token_hex(6)}")
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


# -- S3 --------------------------------------------------------------------------------------------
def aws_client(service: str, *, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 client (thread-safe; one per store or wrapper). Without `endpoint_url` boto3 takes
    AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3 / _KMS) from the environment, then AWS's own."""
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=120,
                        s3={"addressing_style": "path"} if service == "s3" else None)
    session = boto3.session.Session()
    return session.client(service, endpoint_url=endpoint_url, region_name=region or session.region_name or "us-east-1",
                          config=config)


def _s3_error(method: str, key: str, error: Exception) -> StoreError:
    """botocore's errors as ours: the operation, the key and S3's error code (never credentials)."""
    code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else type(error).__name__
    if code in ("404", "NoSuchKey", "NotFound"):
        return ObjectNotFound(f"no object {key}")
    return StoreError(f"S3 {method} of {key} failed: {code or 'unknown error'}")


def _s3(method: str, key: str, call: Any, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except (ClientError, BotoCoreError) as error:
        raise _s3_error(method, key, error) from error


class S3Store:
    """Objects under `prefix` in `bucket`, written as multipart uploads of `part_size` bytes."""

    kind = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, part_size: int = DEFAULT_PART_SIZE,
                 client: Any = None, endpoint_url: str | None = None) -> None:
        if not MIN_PART_SIZE <= part_size <= 5 << 30:
            raise StoreError("the S3 part size must be between 5 MiB and 5 GiB")
        self.bucket, self.prefix, self.part_size = bucket, prefix.strip("/"), part_size
        self.client = client or aws_client("s3", endpoint_url=endpoint_url)

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(_s3, method, kwargs.get("Key", kwargs.get("Prefix", "")),
                                       getattr(self.client, method), Bucket=self.bucket, **kwargs)

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        name = self._name(key)
        upload = (await self._call("create_multipart_upload", Key=name))["UploadId"]
        try:
            record, parts, md5s = await self._upload_parts(name, upload, chunks)
            # the digest goes first: once the upload completes, the object is visible with it
            await self._call("put_object", Key=name + SIDECAR, Body=msgspec.json.encode(record),
                             ContentType="application/json")
            done = await self._call("complete_multipart_upload", Key=name, UploadId=upload,
                                    MultipartUpload={"Parts": parts})
        except BaseException:
            await asyncio.shield(self._abort(name, upload))
            raise
        await self._check_completed(key, name, done, record, md5s)
        return StoredObject(key=key, size=record.size, complete=True, sha256=record.sha256)

    async def _upload_parts(self, name: str, upload: str, chunks: AsyncIterable[bytes]
                            ) -> tuple[_Sidecar, list[dict], list[bytes]]:
        """Parts of exactly `part_size` (the last one shorter), one uploading while the next fills."""
        digest = hashlib.sha256()
        parts: list[dict] = []
        md5s: list[bytes] = []
        size = 0
        pending: asyncio.Task | None = None
        buffer = bytearray()

        def send(number: int, body: bytearray) -> dict:
            digest.update(body)  # in part order: the part before has been sent when this one starts
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            answer = _s3("upload_part", name, self.client.upload_part, Bucket=self.bucket, Key=name,
                         UploadId=upload, PartNumber=number, Body=body)
            md5s.append(md5)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        async def flush(body: bytearray) -> None:
            nonlocal pending
            if pending is not None:
                parts.append(await pending)
            if len(parts) >= MAX_PARTS:
                raise StoreError(f"the object is larger than {MAX_PARTS} parts of {self.part_size} bytes")
            pending = asyncio.create_task(asyncio.to_thread(send, len(parts) + 1, body))

        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                size += len(view)
                while view:
                    room = self.part_size - len(buffer)
                    buffer += view[:room]
                    view = view[room:]
                    if len(buffer) == self.part_size:
                        await flush(buffer)
                        buffer = bytearray()
            if buffer or not parts and pending is None:
                await flush(buffer)  # the last part (an empty object is one empty part)
            if pending is not None:
                parts.append(await pending)
                pending = None
        finally:
            if pending is not None:  # a failure while a part was in flight: let it end first
                await asyncio.gather(pending, return_exceptions=True)
        return _Sidecar(digest.hexdigest(), size), parts, md5s

    async def _check_completed(self, key: str, name: str, done: dict, record: _Sidecar, md5s: list[bytes]) -> None:
        """S3's multipart ETag is the MD5 of the parts' MD5s with the part count, unless the bucket
        encrypts with KMS (then it is opaque, and the size and S3's per-part checks remain)."""
        found = await self._call("head_object", Key=name)
        expected = hashlib.md5(b"".join(md5s), usedforsecurity=False).hexdigest() + f"-{len(md5s)}"
        etag_checkable = found.get("ServerSideEncryption") != "aws:kms" and "SSECustomerAlgorithm" not in found
        if found["ContentLength"] != record.size or (etag_checkable and done["ETag"].strip('"') != expected):
            await self.delete(key)
            raise DigestMismatch(f"object {key} as stored differs from what was sent")

    async def _abort(self, name: str, upload: str) -> None:
        try:
            await self._call("abort_multipart_upload", Key=name, UploadId=upload)
        except StoreError:
            pass  # clean_stale() aborts what could not be aborted now

    async def _sidecar(self, name: str) -> _Sidecar | None:
        try:
            answer = await self._call("get_object", Key=name + SIDECAR)
            raw = await asyncio.to_thread(answer["Body"].read, 4096)
            return msgspec.json.decode(raw, type=_Sidecar)
        except ObjectNotFound:
            return None
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def head(self, key: str) -> StoredObject | None:
        name = self._name(key)
        try:
            found = await self._call("head_object", Key=name)
        except ObjectNotFound:
            return None
        return _described(key, found["ContentLength"], await self._sidecar(name))

    async def read(self, key: str) -> AsyncIterator[bytes]:
        name = self._name(key)
        record = await self._sidecar(name)
        try:
            answer = await self._call("get_object", Key=name)
        except ObjectNotFound:
            raise ObjectNotFound(f"no object {key}") from None
        if record is None or record.size != answer["ContentLength"]:
            answer["Body"].close()
            raise ObjectIncomplete(f"object {key} has no matching digest recorded: it is not complete")

        def produce(write: Any) -> None:
            try:
                for chunk in answer["Body"].iter_chunks(READ_CHUNK):
                    write(chunk)
            except (ClientError, BotoCoreError) as error:  # the connection broke mid-object
                raise _s3_error("get_object", key, error) from error
            finally:
                answer["Body"].close()

        async with aclosing(verified(key, iterate_in_thread(produce, name="s3-read"), record)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def list(self, prefix: str = "") -> list[StoredObject]:
        base = (self.prefix + "/" if self.prefix else "") + _check_prefix(prefix)
        objects: dict[str, int] = {}
        sidecars: set[str] = set()
        token: dict = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=base, **token)
            for entry in page.get("Contents", []):
                key = entry["Key"][len(self.prefix) + 1:] if self.prefix else entry["Key"]
                if key.endswith(SIDECAR):
                    sidecars.add(key[:-len(SIDECAR)])
                else:
                    objects[key] = entry["Size"]
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        return [StoredObject(key=key, size=size, complete=key in sidecars) for key, size in sorted(objects.items())]

    async def delete(self, key: str) -> None:
        name = self._name(key)
        await self._call("delete_object", Key=name)  # the object first: never one without its digest
        await self._call("delete_object", Key=name + SIDECAR)

    async def clean_stale(self, older_than_seconds: float) -> int:
        """Abort multipart uploads under the prefix started before the given age (a crashed
        writer's parts are invisible but billed), and drop sidecars without an object."""
        before = time.time() - older_than_seconds
        removed = 0
        base = self.prefix + "/" if self.prefix else ""
        page = await self._call("list_multipart_uploads", Prefix=base)
        for upload in page.get("Uploads", []):
            if upload["Initiated"].timestamp() < before:
                await self._abort(upload["Key"], upload["UploadId"])
                removed += 1
        listing = await self._call("list_objects_v2", Prefix=base)
        names = {entry["Key"]: entry for entry in listing.get("Contents", [])}
        for name, entry in names.items():
            if name.endswith(SIDECAR) and name[:-len(SIDECAR)] not in names \
                    and entry["LastModified"].timestamp() < before:
                await self._call("delete_object", Key=name)
                removed += 1
        return removed


def open_store(url: str, *, endpoint_url: str | None = None) -> BackupStore:
    """The store BACKUP_STORE_URL names: `file:///path` or `s3://bucket/prefix[?part_size_mb=N]`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreError("a file:// store URL names a local path: file:///path")
        return FileStore(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StoreError("an s3:// store URL names a bucket: s3://bucket/prefix")
        options = parse_qs(parts.query)
        part_size = DEFAULT_PART_SIZE
        if "part_size_mb" in options:
            try:
                part_size = int(options["part_size_mb"][0]) << 20
            except ValueError:
                raise StoreError("part_size_mb must be a whole number of MiB") from None
        return S3Store(parts.netloc, unquote(parts.path), part_size=part_size, endpoint_url=endpoint_url)
    raise StoreError("BACKUP_STORE_URL must be file:///path or s3://bucket/prefix")
