"""Memory stays flat while streaming: 200 MiB generated, encrypted and written to the file store
(then read back and decrypted), and 50 MiB to S3 in 5 MiB parts, each in a fresh process whose
peak RSS (VmHWM) is compared with its peak after a small warm-up run of the same path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MiB = 1 << 20

_SCRIPT = """
import asyncio, json, os, sys, uuid
from provisioning.backups.crypto import decrypt, encrypt
from provisioning.backups.keys import DataKey
from provisioning.backups.store import FileStore, S3Store

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

async def generated(mib):
    block = os.urandom(1 << 20)
    for _ in range(mib):
        yield block

async def main(kind, where, mib):
    store = FileStore(where) if kind == "file" else S3Store(where, "mem", part_size=5 << 20)
    key = DataKey(uuid.uuid4(), 1, os.urandom(32))
    async def keys(tenant, version):
        return key
    async def drain(stream):
        n = 0
        async for chunk in stream:
            n += len(chunk)
        return n
    await store.write("warm.tpbk", encrypt(generated(12), key, uuid.uuid4()))
    await drain(decrypt(store.read("warm.tpbk"), keys, tenant_id=key.tenant_id))
    base = peak_kib()
    stored = await store.write("big.tpbk", encrypt(generated(mib), key, uuid.uuid4()))
    written = peak_kib()
    size = await drain(decrypt(store.read("big.tpbk"), keys, tenant_id=key.tenant_id))
    print(json.dumps({"base": base, "written": written, "read": peak_kib(), "stored": stored.size, "plain": size}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def run(kind: str, where: str, mib: int, endpoint: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    done = subprocess.run([sys.executable, "-c", _SCRIPT, kind, where, str(mib)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["plain"] == mib * MiB and figures["stored"] > mib * MiB
    return figures


def test_file_store_memory_is_flat_for_200_mib(tmp_path: Path) -> None:
    figures = run("file", str(tmp_path), 200)
    print("file store peak RSS KiB:", figures)
    assert figures["written"] - figures["base"] < 32 * 1024
    assert figures["read"] - figures["base"] < 32 * 1024


def test_s3_memory_is_bounded_by_two_parts(bucket: str, moto_endpoint: str) -> None:
    figures = run("s3", bucket, 50, moto_endpoint)
    print("s3 store peak RSS KiB:", figures)
    assert figures["written"] - figures["base"] < 40 * 1024
    assert figures["read"] - figures["base"] < 40 * 1024
