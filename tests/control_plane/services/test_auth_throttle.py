"""Failed admin authentications are throttled per client address (429 with Retry-After, no
catalog query once throttled), a wrong token is remembered briefly so repeating it costs no
catalog query, and a key remembered as valid keeps working while its address is throttled."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, update

from control_plane import errors
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.catalog.models import AdminApiKey
from control_plane.embedded import free_port
from control_plane.services.auth import AdminAuth, FailureThrottle
from control_plane.tokens import hash_token
from tests.conftest import ROOT, Stack, stop_process


@pytest.fixture
async def sessions(stack):
    engine = create_engine(stack.catalog_dsn, pool_size=1)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


async def _revoke(sessions, token: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(AdminApiKey).where(AdminApiKey.token_sha256 == hash_token(token))
                              .values(revoked_at=func.now()))


def wrong() -> str:
    return "Bearer tpa_" + secrets.token_urlsafe(24)


async def _refused(auth: AdminAuth, header: str, client: str, error: type[Exception]) -> Exception:
    with pytest.raises(error) as caught:
        await auth.authenticate(header, client)
    return caught.value


async def test_failures_past_the_limit_are_429_without_a_catalog_query(sessions):
    auth = AdminAuth(sessions, failures_per_minute=5)
    for _ in range(5):
        await _refused(auth, wrong(), "192.0.2.1", errors.Unauthorized)
    lookups = auth.catalog_lookups
    for _ in range(50):
        exc = await _refused(auth, wrong(), "192.0.2.1", errors.TooManyFailedAttempts)
    assert auth.catalog_lookups == lookups  # a throttled address costs the catalog nothing
    assert 1 <= int(exc.headers["Retry-After"]) <= 60
    # another address is not affected
    await _refused(auth, wrong(), "192.0.2.2", errors.Unauthorized)


async def test_the_window_slides(sessions):
    auth = AdminAuth(sessions, failures_per_minute=3)
    auth.throttle = FailureThrottle(limit=3, window=0.5)
    for _ in range(3):
        await _refused(auth, wrong(), "192.0.2.3", errors.Unauthorized)
    await _refused(auth, wrong(), "192.0.2.3", errors.TooManyFailedAttempts)
    await asyncio.sleep(0.6)
    await _refused(auth, wrong(), "192.0.2.3", errors.Unauthorized)  # counted again, not refused


async def test_a_key_found_valid_before_still_works_from_a_throttled_address(sessions):
    auth = AdminAuth(sessions, remember_seconds=0, failures_per_minute=3)  # looked up every time
    token = "tpa_" + secrets.token_urlsafe(24)
    await auth.ensure_bootstrap_token(token, name=f"k{secrets.token_hex(6)}")
    assert await auth.authenticate(f"Bearer {token}", "192.0.2.4")
    for _ in range(3):
        await _refused(auth, wrong(), "192.0.2.4", errors.Unauthorized)
    await _refused(auth, wrong(), "192.0.2.4", errors.TooManyFailedAttempts)
    assert await auth.authenticate(f"Bearer {token}", "192.0.2.4")  # successes are unaffected
    await _revoke(sessions, token)  # and it is still looked up: a revoked key is refused
    await _refused(auth, f"Bearer {token}", "192.0.2.4", errors.Unauthorized)
    # malformed headers are refused as before (no token to guess with)
    await _refused(auth, "Basic abc", "192.0.2.4", errors.Unauthorized)


async def test_a_repeated_wrong_token_costs_one_catalog_query(sessions):
    auth = AdminAuth(sessions, failures_per_minute=1000, forget_wrong_seconds=0.3)
    header = wrong()
    for _ in range(20):
        await _refused(auth, header, "192.0.2.5", errors.Unauthorized)
    assert auth.catalog_lookups == 1
    await asyncio.sleep(0.35)
    await _refused(auth, header, "192.0.2.5", errors.Unauthorized)
    assert auth.catalog_lookups == 2  # forgotten after the window: read again


async def test_a_token_tried_before_it_was_set_here_is_accepted_at_once(sessions):
    auth = AdminAuth(sessions, forget_wrong_seconds=60)
    token = "tpa_" + secrets.token_urlsafe(24)
    await _refused(auth, f"Bearer {token}", "192.0.2.6", errors.Unauthorized)
    await auth.ensure_bootstrap_token(token, name=f"k{secrets.token_hex(6)}")
    assert await auth.authenticate(f"Bearer {token}", "192.0.2.6")


def test_memory_is_bounded():
    throttle = FailureThrottle(limit=5, window=60, max_addresses=100)
    for i in range(1000):
        for _ in range(10):
            throttle.failed(f"198.51.100.{i}")
    assert len(throttle._failures) == 100
    assert all(len(times) == 5 for times in throttle._failures.values())
    assert throttle.retry_after("198.51.100.999") is not None
    assert throttle.retry_after("198.51.100.0") is None  # forgotten first (idle longest)


async def _forget_failures(stack: Stack) -> None:
    """The suite's Redis counts every test's failures (others send many from the same address
    with a limit of a million): a test of the limit starts from none."""
    client = aioredis.from_url(stack.settings.redis_url)
    try:
        keys = [key async for key in client.scan_iter("tenantplane:{auth-failures}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def strict_api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The control-plane app with the default limit of 20 failures a minute per address."""
    from litestar.testing import AsyncTestClient

    from control_plane.api.app import create_app

    settings = msgspec.structs.replace(stack.settings, admin_auth_failures_per_minute=20)
    await _forget_failures(stack)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def test_the_api_answers_429_with_retry_after(strict_api, stack: Stack):
    for _ in range(20):
        r = await strict_api.get("/v1/tenants", headers={"Authorization": wrong()})
        assert r.status_code == 401, r.text
    r = await strict_api.get("/v1/tenants", headers={"Authorization": wrong()})
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "too_many_failed_attempts"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    ok = await strict_api.get("/v1/tenants", headers={"Authorization": f"Bearer {stack.settings.admin_token}"})
    assert ok.status_code == 200, ok.text  # the key this process set: successes go on


async def test_a_local_client_cannot_pick_its_address_with_x_forwarded_for(stack: Stack):
    """`tenantctl api` as it runs: loopback clients are not trusted proxies unless configured."""
    port = free_port()
    await _forget_failures(stack)
    env = stack.env(API_PORT=str(port), ADMIN_TOKEN=stack.settings.admin_token,
                    ADMIN_AUTH_FAILURES_PER_MINUTE="5")
    env.pop("FORWARDED_ALLOW_IPS", None)
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "api"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/health/live")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API did not start"
                await asyncio.sleep(0.2)
            statuses = [(await client.get("/v1/tenants", headers={"Authorization": wrong(),
                                                                    "X-Forwarded-For": f"203.0.113.{i}"})).status_code
                        for i in range(8)]
        assert statuses == [401] * 5 + [429] * 3, statuses
    finally:
        stop_process(proc)
