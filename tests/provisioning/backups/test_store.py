"""Backup stores: a local folder and S3 (moto's server over HTTP). Objects are complete only with a
matching digest; a failed or killed write leaves nothing that looks complete; reads check digests."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.backups.store import (
    DigestMismatch,
    FileStore,
    ObjectIncomplete,
    ObjectNotFound,
    S3Store,
    StoreError,
    aws_client,
    check_key,
    open_store,
)
from tests.provisioning.backups.conftest import chunks_of, collect

ROOT = Path(__file__).resolve().parents[3]
MiB = 1 << 20


class Boom(Exception):
    pass


async def failing_source(data: bytes, after: int):
    sent = 0
    async for chunk in chunks_of(data):
        if sent >= after:
            raise Boom("the source broke")
        sent += len(chunk)
        yield chunk


def s3(bucket: str, endpoint: str, prefix: str = "pre/fix") -> S3Store:
    return S3Store(bucket, prefix, part_size=5 * MiB, endpoint_url=endpoint)


async def test_file_store_round_trip_list_head_delete(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = os.urandom(3 * MiB + 17)
    stored = await store.write("tenants/a/b1.tpbk", chunks_of(data))
    assert stored.complete and stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await collect(store.read("tenants/a/b1.tpbk")) == data
    assert await store.head("tenants/a/b1.tpbk") == stored
    await store.write("tenants/b/b2.tpbk", chunks_of(b"x"))
    assert [o.key for o in await store.list("tenants/a/")] == ["tenants/a/b1.tpbk"]
    # a prefix is matched as S3 does (only its folder is walked): a partial name, a folder not there
    assert [o.key for o in await store.list("tenants/b")] == ["tenants/b/b2.tpbk"]
    assert await store.list("tenants/missing/") == []
    assert {o.key for o in await store.list()} == {"tenants/a/b1.tpbk", "tenants/b/b2.tpbk"}
    await store.delete("tenants/a/b1.tpbk")
    assert await store.head("tenants/a/b1.tpbk") is None
    with pytest.raises(ObjectNotFound):
        await collect(store.read("tenants/a/b1.tpbk"))
    assert sorted(p.name for p in (tmp_path / "tenants" / "a").iterdir()) == []


async def test_file_store_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(Boom):
        await store.write("t/x.tpbk", failing_source(os.urandom(2 * MiB), MiB))
    assert await store.head("t/x.tpbk") is None
    assert list((tmp_path / "t").iterdir()) == []


async def test_file_store_read_detects_changed_and_cut_objects(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = os.urandom(2 * MiB)
    await store.write("k.tpbk", chunks_of(data))
    path = tmp_path / "k.tpbk"
    raw = bytearray(path.read_bytes())
    raw[MiB] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(DigestMismatch):
        await collect(store.read("k.tpbk"))
    path.write_bytes(data[:-10])
    assert not (await store.head("k.tpbk")).complete
    with pytest.raises(ObjectIncomplete):
        await collect(store.read("k.tpbk"))


_KILLED_WRITER = """
import asyncio, os, sys
from provisioning.backups.store import FileStore
async def endless():
    block = os.urandom(1 << 20)
    while True:
        yield block
        print("chunk", flush=True)
        await asyncio.sleep(0.01)
asyncio.run(FileStore(sys.argv[1]).write("t/killed.tpbk", endless()))
"""


async def test_file_store_killed_writer_leaves_no_complete_object_and_stale_files_are_cleaned(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(5):
            assert proc.stdout.readline().startswith("chunk")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    store = FileStore(tmp_path)
    assert await store.head("t/killed.tpbk") is None
    assert await store.list() == []
    leftovers = list((tmp_path / "t").iterdir())
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0].name
    assert await store.clean_stale(3600) == 0  # young: may belong to a write under way
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    assert await store.clean_stale(3600) == 1
    assert list((tmp_path / "t").iterdir()) == []


def test_keys_are_plain_relative_paths() -> None:
    for bad in ("../x", "/abs", "a/../b", "a//b", "x.sha256", "a/.x.tmp-1", ""):
        with pytest.raises(StoreError):
            check_key(bad)
    assert check_key("tenants/0f/1a2b.tpbk") == "tenants/0f/1a2b.tpbk"


def test_store_urls(tmp_path: Path, moto_endpoint: str) -> None:
    assert isinstance(open_store(f"file://{tmp_path}"), FileStore)
    store = open_store("s3://bucket/some/prefix?part_size_mb=8", endpoint_url=moto_endpoint)
    assert isinstance(store, S3Store) and store.part_size == 8 * MiB and store.prefix == "some/prefix"
    for bad in ("ftp://x", "s3:///nobucket", "file://host/path", "s3://b/p?part_size_mb=1", "s3://b/p?part_size_mb=x"):
        with pytest.raises(StoreError):
            open_store(bad, endpoint_url=moto_endpoint)


async def test_s3_multipart_round_trip(bucket: str, moto_endpoint: str) -> None:
    store = s3(bucket, moto_endpoint)
    data = os.urandom(12 * MiB + 5)  # three parts: 5, 5 and 2 MiB
    stored = await store.write("tenants/t1/b1.tpbk", chunks_of(data, 700_000))
    assert stored.complete and stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.head("tenants/t1/b1.tpbk") == stored
    assert await collect(store.read("tenants/t1/b1.tpbk")) == data
    client = aws_client("s3", endpoint_url=moto_endpoint)
    parts = client.head_object(Bucket=bucket, Key="pre/fix/tenants/t1/b1.tpbk", PartNumber=1)
    assert parts["PartsCount"] == 3
    empty = await store.write("tenants/t1/empty.tpbk", chunks_of(b""))
    assert empty.size == 0 and await collect(store.read("tenants/t1/empty.tpbk")) == b""
    listed = await store.list("tenants/")
    assert [(o.key, o.complete) for o in listed] == [("tenants/t1/b1.tpbk", True), ("tenants/t1/empty.tpbk", True)]
    await store.delete("tenants/t1/b1.tpbk")
    assert await store.head("tenants/t1/b1.tpbk") is None
    with pytest.raises(ObjectNotFound):
        await collect(store.read("tenants/t1/b1.tpbk"))


async def test_s3_failed_write_aborts_the_upload(bucket: str, moto_endpoint: str) -> None:
    store = s3(bucket, moto_endpoint)
    with pytest.raises(Boom):
        await store.write("t/failed.tpbk", failing_source(os.urandom(12 * MiB), 11 * MiB))
    client = aws_client("s3", endpoint_url=moto_endpoint)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert await store.head("t/failed.tpbk") is None


async def test_s3_changed_object_and_missing_digest_are_refused(bucket: str, moto_endpoint: str) -> None:
    store = s3(bucket, moto_endpoint)
    data = os.urandom(MiB)
    await store.write("t/c.tpbk", chunks_of(data))
    client = aws_client("s3", endpoint_url=moto_endpoint)
    changed = bytearray(data)
    changed[100] ^= 0xFF
    client.put_object(Bucket=bucket, Key="pre/fix/t/c.tpbk", Body=bytes(changed))
    with pytest.raises(DigestMismatch):
        await collect(store.read("t/c.tpbk"))
    client.delete_object(Bucket=bucket, Key="pre/fix/t/c.tpbk.sha256")
    assert not (await store.head("t/c.tpbk")).complete
    assert [o.complete for o in await store.list("t/")] == [False]
    with pytest.raises(ObjectIncomplete):
        await collect(store.read("t/c.tpbk"))


async def test_s3_stale_uploads_are_aborted(bucket: str, moto_endpoint: str) -> None:
    client = aws_client("s3", endpoint_url=moto_endpoint)
    client.create_multipart_upload(Bucket=bucket, Key="pre/fix/t/crashed.tpbk")  # a writer that died
    store = s3(bucket, moto_endpoint)
    # moto reports a fixed initiation date in 2010, so every upload is old there: the age
    # threshold itself is checked by the file store's test
    assert await store.clean_stale(3600) == 1
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_aws_endpoint_url_is_honoured(bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    store = open_store(f"s3://{bucket}/env")
    await store.write("k.tpbk", chunks_of(b"hello"))
    assert await collect(store.read("k.tpbk")) == b"hello"


async def test_store_failures_are_store_errors(tmp_path: Path, moto_endpoint: str) -> None:
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(StoreError, match="x.tpbk"):
        await FileStore(tmp_path / "not-a-folder").write("x.tpbk", chunks_of(b"data"))
    missing = S3Store("no-such-bucket-here", "p", part_size=5 * MiB, endpoint_url=moto_endpoint)
    with pytest.raises(StoreError, match="NoSuchBucket"):
        await missing.write("x.tpbk", chunks_of(b"data"))
    with pytest.raises(StoreError, match="NoSuchBucket"):
        await missing.list()
