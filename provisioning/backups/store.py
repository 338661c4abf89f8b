"""Where backup objects live: a local folder (`file:///path`, file_store.py) or S3
(`s3://bucket/prefix`, here); `open_store(BACKUP_STORE_URL)` picks one. What the stores share
(errors, keys, the digest sidecar) is in objects.py.

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
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import msgspec
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from provisioning.backups.file_store import FileStore
from provisioning.backups.objects import (
    READ_CHUNK,
    SIDECAR,
    BackupStore,
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
from provisioning.backups.streams import iterate_in_thread

__all__ = ["BackupStore", "DigestMismatch", "FileStore", "ObjectIncomplete", "ObjectNotFound", "S3Store",
           "StoreError", "StoredObject", "aws_client", "check_key", "open_store"]

# S3 allows at most 10,000 parts per multipart upload, so a streamed upload of unknown size caps
# the object at 10,000 x the part size: 64 MiB parts allow 625 GiB per backup (tenant dumps are
# compressed, so a much larger database). Memory is at most two parts (one filling while the one
# before uploads), 128 MiB at the default; choose `?part_size_mb=` on the URL for other trade-offs.
DEFAULT_PART_SIZE = 64 << 20
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
MAX_PARTS = 10_000


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
                            ) -> tuple[Sidecar, list[dict], list[bytes]]:
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
        return Sidecar(digest.hexdigest(), size), parts, md5s

    async def _check_completed(self, key: str, name: str, done: dict, record: Sidecar, md5s: list[bytes]) -> None:
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

    async def _sidecar(self, name: str) -> Sidecar | None:
        try:
            answer = await self._call("get_object", Key=name + SIDECAR)
            raw = await asyncio.to_thread(answer["Body"].read, 4096)
            return msgspec.json.decode(raw, type=Sidecar)
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
        return described(key, found["ContentLength"], await self._sidecar(name))

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
        base = (self.prefix + "/" if self.prefix else "") + check_prefix(prefix)
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
