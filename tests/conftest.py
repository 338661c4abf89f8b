"""Real servers for the whole run: an embedded PostgreSQL and an embedded Valkey (Redis protocol),
each on a free port in a temporary folder, stopped at the end even when tests fail."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from control_plane.embedded import EmbeddedPostgres, EmbeddedRedis, remove_tree
from control_plane.settings import Settings
from migrations import runner

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-secret-key-" + "x" * 32


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tenantplane-tests-"))
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def pg(tmp_root: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_root / "pg1", fast=True, max_connections=300).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def extra_postgres(tmp_root: Path, name: str) -> Iterator[EmbeddedPostgres]:
    """Another PostgreSQL server, for tests that need a second one or one they may stop."""
    server = EmbeddedPostgres(tmp_root / name, fast=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_root / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    """One catalog database plus the settings every process of the product shares."""

    settings: Settings
    pg: EmbeddedPostgres

    @property
    def catalog_dsn(self) -> str:
        return self.settings.catalog_database_url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTPLANE_TEST_")}
        env.update({
            "CATALOG_DATABASE_URL": self.catalog_dsn, "SECRET_KEY": self.settings.secret_key,
            "REDIS_URL": self.settings.redis_url or "", "WORKER_POLL_INTERVAL": "0.2",
            "STEP_RETRY_BASE_SECONDS": "0.2", "PYTHONPATH": str(ROOT),
            "BACKUP_STORE_URL": self.settings.backup_store_url or "",
            "BACKUP_MASTER_KEY_FILE": self.settings.backup_master_key_file,
            "BACKUP_SCHEDULE": "off",  # the schedule's tests drive it with a clock of their own
            "BACKUP_DRILL_INTERVAL": "0",  # scheduled drills would race the tests' own operations
            "LOGIN_CHECK_INTERVAL_SECONDS": "0",  # tests alter login roles on purpose and watch for themselves
            # the failed-login limits of the in-process apps: every process counts in the suite's one Redis
            "ADMIN_AUTH_FAILURES_PER_MINUTE": str(self.settings.admin_auth_failures_per_minute),
            "ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE": str(self.settings.admin_auth_failures_global_per_minute),
            # the stack's own tree, whatever the shell exported: its processes must agree (tree_check.py)
            "TENANT_MIGRATIONS": self.settings.tenant_tree.versions or "",
        })
        env.update(extra)
        return env

    def start_worker(self, *, capture: bool = False, **extra_env: str) -> subprocess.Popen:
        """A worker process. Its output goes to a file beside the server data (a pipe nobody
        drains would block the worker once full), or to a pipe with `capture=True` for a test
        that reads it line by line while the worker is short-lived."""
        if capture:
            out = subprocess.PIPE
        else:
            out = open(self.pg.data_dir.parent / f"worker-{os.getpid()}-{time.monotonic_ns()}.log", "w")
        try:
            return subprocess.Popen([sys.executable, "-m", "control_plane.cli", "worker"],
                                    env=self.env(**extra_env), stdout=out, stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, start_new_session=True)
        finally:
            if not capture:
                out.close()


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def fresh_catalog(pg: EmbeddedPostgres, name: str) -> str:
    """An empty catalog database `name` (dropped first if a run before left one), migrated; its DSN."""
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await runner.upgrade("catalog", pg.dsn(name))
    return pg.dsn(name)


@asynccontextmanager
async def catalog_pool(pg: EmbeddedPostgres, name: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh catalog of its own (no server registered, no worker serving it)."""
    pool = await asyncpg.create_pool(await fresh_catalog(pg, name), min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def make_stack(pg: EmbeddedPostgres, redis_url: str | None, name: str) -> Stack:
    settings = Settings.from_env({}, catalog_database_url=await fresh_catalog(pg, name), secret_key=SECRET_KEY,
                                 redis_url=redis_url, admin_token="tpa_" + secrets.token_urlsafe(24),
                                 tenant_jwt_secret="jwt-secret-" + "y" * 32,
                                 # the hostile-input tests send hundreds of wrong tokens from one
                                 # address; the throttle has tests of its own (test_auth_throttle.py)
                                 admin_auth_failures_per_minute=1_000_000,
                                 admin_auth_failures_global_per_minute=1_000_000,
                                 # backups: a folder and a master key of this stack's, beside the server data
                                 backup_store_url=(pg.data_dir.parent / f"backups-{name}").as_uri(),
                                 backup_master_key_file=str(pg.data_dir.parent / f"backup-master-{name}.key"))
    from control_plane.cli.admin import register

    await register(settings, "local", pg.dsn(), 10_000, 200, replace=True)
    return Stack(settings=settings, pg=pg)


@pytest.fixture(scope="session")
async def stack(pg: EmbeddedPostgres, redis_server: EmbeddedRedis) -> AsyncIterator[Stack]:
    """The shared catalog, with one worker process serving it for the whole run."""
    s = await make_stack(pg, redis_server.url, "catalog_main")
    worker = s.start_worker()
    try:
        yield s
    finally:
        stop_process(worker)


@asynccontextmanager
async def admin_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The control-plane app of `stack` in this process, with the admin token."""
    from litestar.testing import AsyncTestClient

    from control_plane.api.app import create_app

    async with AsyncTestClient(create_app(stack.settings)) as client:
        client.headers["Authorization"] = f"Bearer {stack.settings.admin_token}"
        yield client


@pytest.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(stack) as client:
        yield client


@pytest.fixture(scope="session")
async def tenant_app(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    from litestar.testing import AsyncTestClient

    from demo_app.app import create_app
    from tenant_router.config import RouterConfig

    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          redis_url=stack.settings.redis_url, apex="localhost",
                          jwt_secret=stack.settings.tenant_jwt_secret)
    async with AsyncTestClient(create_app(config)) as client:
        yield client


def unique_slug(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def wait_for(api: httpx.AsyncClient, tenant_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = (await api.get(f"/v1/tenants/{tenant_id}")).json()
        if body.get("status") == status:
            return body
        if body.get("status") == "failed" and status != "failed":
            break
        await asyncio.sleep(0.1)
    raise AssertionError(f"tenant {tenant_id} did not become {status}: {body}")


async def create_active_tenant(api: httpx.AsyncClient, slug: str | None = None) -> dict:
    response = await api.post("/v1/tenants", json={"slug": slug or unique_slug(), "name": "Test", "tier": "dedicated"})
    assert response.status_code == 202, response.text
    return await wait_for(api, response.json()["tenant"]["id"], "active")


async def add_unreachable_server(stack: Stack, status: str = "active") -> str:
    """A server row nobody listens behind (port 1), written behind the API's back (the API would
    refuse it), with room for no tenant unless one is placed there by name."""
    name = unique_slug("unreachable")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await catalog.execute(
            "INSERT INTO database_servers (id, name, host, port, admin_user, admin_database, capacity_databases,"
            " capacity_connections, status) VALUES (gen_random_uuid(), $1, '127.0.0.1', 1, 'x', 'postgres', 0, 1, $2)",
            name, status)
    finally:
        await catalog.close()
    return name


# SIGKILL sweeps: every step boundary of every pipeline is killed in `make chaos`; the default run
# (`make test`, CI) keeps the first boundary of each sweep, so each pipeline's crash path is still
# run every time while the suite stays within its time budget
CHAOS_SWEEPS = frozenset({"test_crash_recovery.py", "test_backup_crash.py", "test_erasure_crash.py"})


def pytest_collection_finish(session: pytest.Session) -> None:
    """The router-only virtualenv starts building now if its test is to run (tests/packaging)."""
    from tests.packaging import router_venv
    if any(item.name == router_venv.TEST_NAME for item in session.items):
        session.config.stash[ROUTER_VENV] = router_venv.RouterVenv(ROOT)


def pytest_sessionfinish(session: pytest.Session) -> None:
    venv = session.config.stash.get(ROUTER_VENV, None)
    if venv is not None:
        venv.close()


ROUTER_VENV: pytest.StashKey = pytest.StashKey()


@pytest.fixture
def router_venv(request: pytest.FixtureRequest):
    """The virtualenv pytest_collection_finish started building (see tests/packaging/router_venv.py)."""
    venv = request.config.stash.get(ROUTER_VENV, None)
    if venv is None:
        pytest.skip("the router virtualenv is built only when its test was collected")
    return venv


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: set[tuple[str, str]] = set()
    for item in items:
        if item.path.name in CHAOS_SWEEPS and getattr(item, "callspec", None) is not None:
            key = (str(item.path), getattr(item, "originalname", item.name))
            if key in seen:
                item.add_marker(pytest.mark.chaos)
            seen.add(key)
