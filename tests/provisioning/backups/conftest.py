"""A real S3 and KMS endpoint for the backup tests: moto's server (`moto[server]`) in a process of
its own on a free port, in a temporary folder, reached over HTTP through boto3 and stopped at the
end. Plus small helpers: a fresh database on the suite's PostgreSQL, a catalog with a tenant row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from control_plane.embedded import EmbeddedPostgres, free_port
from provisioning.backups.store import aws_client
from tests.conftest import catalog_pool

_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def moto_endpoint(tmp_root: Path) -> Iterator[str]:
    folder = tmp_root / "moto"
    folder.mkdir(exist_ok=True)
    port = free_port()
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)  # boto3 wants credentials; moto accepts any
    log = open(folder / "moto.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                             "-p", str(port)], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start:\n" + (folder / "moto.log").read_text()[-2000:])
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"tp-backups-{uuid.uuid4().hex[:10]}"
    aws_client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def kms_key(moto_endpoint: str) -> str:
    return aws_client("kms", endpoint_url=moto_endpoint).create_key(Description="tenantplane tests")["KeyMetadata"]["KeyId"]


async def fresh_database(pg: EmbeddedPostgres, prefix: str = "bk") -> str:
    """A new empty database on the suite's server; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


@pytest.fixture(scope="module")
async def catalog(pg: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    async with catalog_pool(pg, f"catalog_backups_{uuid.uuid4().hex[:6]}") as pool:
        yield pool


async def new_tenant(catalog: asyncpg.Pool, tier: str = "dedicated") -> uuid.UUID:
    tenant_id = uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'Backup test', $3, 'active')",
                          tenant_id, f"bk{tenant_id.hex[:12]}", tier)
    return tenant_id


async def chunks_of(data: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    out = bytearray()
    async for chunk in stream:
        out += chunk
    return bytes(out)
