"""The failed-login throttle counted in Redis (a real Valkey of this module's): API processes share
one count per address and one cap for all addresses, reserving attempts atomically; a Redis that
is frozen or gone leaves the count to each process (no 500, no request held past the timeout);
valid tokens are not counted."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from contracts.channels import AUTH_FAILURES_ALL_KEY
from control_plane import errors
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.embedded import EmbeddedRedis, free_port
from control_plane.services.auth import AdminAuth
from control_plane.services.auth_throttle import FailureThrottle, SharedFailureThrottle
from control_plane.settings import Settings, SettingsError
from tests.conftest import Stack

TIMEOUT = 0.5  # REDIS_TIMEOUT_SECONDS of these tests


@pytest.fixture(scope="module")
def valkey(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_root / f"redis-throttle-{time.monotonic_ns()}").start()
    try:
        yield server
    finally:
        os.kill(server._proc.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
async def redis(valkey: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(valkey.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    await client.flushdb()  # every test starts with no failure counted
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def sessions(stack: Stack):
    engine = create_engine(stack.catalog_dsn, pool_size=2)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


@contextmanager
def frozen(server: EmbeddedRedis) -> Iterator[None]:
    os.kill(server._proc.pid, signal.SIGSTOP)  # connections stay open, no reply ever comes
    try:
        yield
    finally:
        os.kill(server._proc.pid, signal.SIGCONT)


def wrong() -> str:
    return "Bearer tpa_" + secrets.token_urlsafe(24)


def shared(redis: aioredis.Redis, limit: int, everyone: int, *, cooldown: float = 5.0) -> SharedFailureThrottle:
    return SharedFailureThrottle(redis, FailureThrottle(limit, global_limit=everyone), address_secret=b"k" * 32,
                                 timeout=TIMEOUT, cooldown=cooldown)


async def _outcome(auth: AdminAuth, header: str, client: str) -> str:
    try:
        await auth.authenticate(header, client)
    except errors.Unauthorized:
        return "401"
    except errors.TooManyFailedAttempts:
        return "429"
    return "ok"


@asynccontextmanager
async def _api(stack: Stack, valkey_url: str, limit: int, everyone: int) -> AsyncIterator[httpx.AsyncClient]:
    """One API process's app (in this process) on the given Redis."""
    from litestar.testing import AsyncTestClient

    from control_plane.api.app import create_app

    settings = msgspec.structs.replace(stack.settings, redis_url=valkey_url, redis_timeout_seconds=TIMEOUT,
                                       admin_auth_failures_per_minute=limit,
                                       admin_auth_failures_global_per_minute=everyone)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client


async def test_two_api_processes_share_the_limit_of_an_address(stack: Stack, valkey, redis):
    async with _api(stack, valkey.url, 5, 1000) as one, _api(stack, valkey.url, 5, 1000) as two:
        statuses = [(await (one, two)[i % 2].get("/v1/tenants", headers={"Authorization": wrong()})).status_code
                    for i in range(5)]
        assert statuses == [401] * 5  # 3 seen by one, 2 by the other: each alone is under 5
        for api in (one, two):
            r = await api.get("/v1/tenants", headers={"Authorization": wrong()})
            assert r.status_code == 429, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "too_many_failed_attempts"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            ok = await api.get("/v1/tenants", headers={"Authorization": f"Bearer {stack.settings.admin_token}"})
            assert ok.status_code == 200, ok.text  # the key each process set is no guess


async def test_the_cap_on_all_addresses_is_fleet_wide(sessions, redis, valkey):
    other = aioredis.from_url(valkey.url, socket_timeout=TIMEOUT)
    try:
        one = AdminAuth(sessions, throttle=shared(redis, 3, 10))
        two = AdminAuth(sessions, throttle=shared(other, 3, 10))
        token = "tpa_" + secrets.token_urlsafe(24)
        await one.ensure_bootstrap_token(token, name=f"k{secrets.token_hex(6)}")
        # ten addresses, one failure each, spread over both processes: each address far under its limit
        outcomes = [await _outcome((one, two)[i % 2], wrong(), f"198.51.100.{i}") for i in range(10)]
        assert outcomes == ["401"] * 10
        lookups = one.catalog_lookups + two.catalog_lookups
        for auth in (one, two):
            with pytest.raises(errors.TooManyFailedAttempts) as caught:
                await auth.authenticate(wrong(), "198.51.100.200")  # a fresh address: refused all the same
            assert "all addresses" in caught.value.detail and 1 <= int(caught.value.headers["Retry-After"]) <= 60
        assert one.catalog_lookups + two.catalog_lookups == lookups  # refused without a catalog query
        assert await one.authenticate(f"Bearer {token}", "198.51.100.201")  # a token this process knows
        assert await redis.zcard(AUTH_FAILURES_ALL_KEY) == 10  # the cap bounds what Redis holds too
    finally:
        await other.aclose()


async def test_concurrent_guesses_cannot_pass_the_limit(sessions, redis, valkey):
    """Attempts are reserved before the lookup, atomically: 40 guesses at once from one address
    through two processes get exactly the limit of catalog lookups."""
    other = aioredis.from_url(valkey.url, socket_timeout=TIMEOUT)
    try:
        one = AdminAuth(sessions, throttle=shared(redis, 5, 1000))
        two = AdminAuth(sessions, throttle=shared(other, 5, 1000))
        outcomes = await asyncio.gather(*(_outcome((one, two)[i % 2], wrong(), "192.0.2.50") for i in range(40)))
        assert sorted(outcomes) == ["401"] * 5 + ["429"] * 35
        assert one.catalog_lookups + two.catalog_lookups == 5
    finally:
        await other.aclose()


async def test_valid_tokens_are_not_counted(sessions, redis):
    setter = AdminAuth(sessions)
    token = "tpa_" + secrets.token_urlsafe(24)
    await setter.ensure_bootstrap_token(token, name=f"k{secrets.token_hex(6)}")
    auth = AdminAuth(sessions, remember_seconds=0, throttle=shared(redis, 3, 3))  # not trusted here: looked up
    for _ in range(20):
        assert await auth.authenticate(f"Bearer {token}", "192.0.2.60")
    await auth.throttle.aclose()  # the releases, sent in the background, are done
    assert await redis.zcard(AUTH_FAILURES_ALL_KEY) == 0
    outcomes = [await _outcome(auth, wrong(), "192.0.2.60") for _ in range(4)]
    assert outcomes == ["401"] * 3 + ["429"]  # the successes left the whole limit


async def test_redis_holds_no_client_address(sessions, redis):
    auth = AdminAuth(sessions, throttle=shared(redis, 3, 100))
    await _outcome(auth, wrong(), "203.0.113.77")
    keys = [key.decode() async for key in redis.scan_iter("*")]
    assert len(keys) == 2 and not any("203.0.113" in key for key in keys), keys


async def test_a_frozen_redis_leaves_the_count_to_the_process(stack: Stack, valkey, redis):
    async with _api(stack, valkey.url, 3, 1000) as api:
        assert (await api.get("/v1/tenants", headers={"Authorization": wrong()})).status_code == 401  # counted in Redis
        with frozen(valkey):
            statuses, slowest = [], 0.0
            for _ in range(4):
                started = time.monotonic()
                statuses.append((await asyncio.wait_for(
                    api.get("/v1/tenants", headers={"Authorization": wrong()}), 10)).status_code)
                slowest = max(slowest, time.monotonic() - started)
            ok = await api.get("/v1/tenants", headers={"Authorization": f"Bearer {stack.settings.admin_token}"})
        assert statuses == [401, 401, 429, 429], statuses  # the process's own count: 3 failures, then refused
        assert slowest < TIMEOUT + 1.0, slowest  # Redis waited on once at most, within its timeout
        assert ok.status_code == 200, ok.text


async def test_without_an_answering_redis_the_process_counts_and_then_redis_again(sessions, redis):
    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=TIMEOUT,
                             socket_connect_timeout=TIMEOUT)  # nothing listens there
    try:
        auth = AdminAuth(sessions, throttle=shared(dead, 3, 1000))
        outcomes = [await _outcome(auth, wrong(), "192.0.2.70") for _ in range(4)]
        assert outcomes == ["401"] * 3 + ["429"]
    finally:
        await dead.aclose()
    # Redis answers again after the cooldown: it decides again (here: nothing counted there yet)
    throttle = shared(redis, 3, 1000, cooldown=0.2)
    throttle.local.record("192.0.2.71")
    throttle._unavailable(ConnectionError("gone"))
    auth = AdminAuth(sessions, throttle=throttle)
    await asyncio.sleep(0.25)
    assert await _outcome(auth, wrong(), "192.0.2.71") == "401"
    assert await redis.zcard(AUTH_FAILURES_ALL_KEY) == 1


def test_the_cap_on_all_addresses_is_a_setting():
    env = {"CATALOG_DATABASE_URL": "postgresql://u@h/db", "SECRET_KEY": secrets.token_urlsafe(48)}
    assert Settings.from_env(env).admin_auth_failures_global_per_minute == 200
    assert Settings.from_env({**env, "ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE": "50"}).admin_auth_failures_global_per_minute == 50
    with pytest.raises(SettingsError, match="ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE"):
        Settings.from_env({**env, "ADMIN_AUTH_FAILURES_PER_MINUTE": "30", "ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE": "20"})
