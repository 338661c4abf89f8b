"""Registering a database server: every failure to connect gets one answer (the cause, which would
tell open ports from closed ones, goes to the server log only), unix-socket hosts and DSN
parameters that redirect the connection are refused, and SERVER_ALLOWED_HOSTS limits the hosts."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from control_plane import errors
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.embedded import free_port
from control_plane.hostlist import HostAllowlist
from control_plane.schemas import RegisterServer
from control_plane.services.servers import CANNOT_CONNECT, ServerService
from control_plane.settings import Settings, SettingsError
from provisioning.sealing import SecretBox
from tests.conftest import SECRET_KEY, Stack, fresh_catalog


@pytest.fixture(scope="module")
async def catalog_sessions(pg) -> AsyncIterator:
    """A catalog of its own: nothing registered here is ever placed on by the shared worker."""
    engine = create_engine(await fresh_catalog(pg, "catalog_servers"), pool_size=2)
    try:
        yield sessionmaker(engine)
    finally:
        await engine.dispose()


def _service(sessions, allowed: str | None = None) -> ServerService:
    return ServerService(sessions, SecretBox(SECRET_KEY), HostAllowlist.parse(allowed))


def _body(dsn: str) -> RegisterServer:
    return RegisterServer(name=f"s{secrets.token_hex(6)}", dsn=dsn)


async def _refusal(service: ServerService, dsn: str) -> errors.ControlPlaneError:
    with pytest.raises(errors.ControlPlaneError) as caught:
        await service.register("test", _body(dsn))
    return caught.value


WRONG_PASSWORD = "pw-" + secrets.token_hex(8)


async def test_every_connection_failure_gets_the_same_answer(catalog_sessions, pg, redis_server, caplog):
    service = _service(catalog_sessions)
    dsns = {
        "closed port": f"postgresql://u:p@127.0.0.1:{free_port()}/postgres",
        "not PostgreSQL": f"postgresql://u:p@127.0.0.1:{redis_server.port}/postgres",
        "wrong password": f"postgresql://postgres:{WRONG_PASSWORD}@127.0.0.1:{pg.port}/postgres?sslmode=disable",
        "unknown user": f"postgresql://nobody:x@127.0.0.1:{pg.port}/postgres?sslmode=disable",
        "unknown database": f"postgresql://postgres:{pg.password}@127.0.0.1:{pg.port}/nodb?sslmode=disable",
        "unresolvable name": "postgresql://u:p@no-such-host.invalid:5432/postgres",
    }
    with caplog.at_level(logging.WARNING, logger="tenantplane.servers"):
        answers = {why: await _refusal(service, dsn) for why, dsn in dsns.items()}
    for why, exc in answers.items():
        assert (exc.code, exc.status, exc.detail) == ("server_unreachable", 422, CANNOT_CONNECT), why
    logged = caplog.text  # the causes: in the log only, and never a password
    assert "ConnectionRefusedError" in logged and "InvalidPasswordError" in logged, logged
    assert WRONG_PASSWORD not in logged and pg.password not in logged


async def test_the_api_answer_names_no_exception(api):
    r = await api.post("/v1/database-servers", json={"name": f"s{secrets.token_hex(6)}",
                                                       "dsn": f"postgresql://u:p@127.0.0.1:{free_port()}/db"})
    assert r.status_code == 422 and r.json()["code"] == "server_unreachable", r.text
    assert r.json()["detail"] == CANNOT_CONNECT


@pytest.mark.parametrize("dsn", [
    "postgresql://u@%2Ftmp/db",
    "postgresql://u@%2Fvar%2Frun%2Fpostgresql:5432/db",
    "postgresql://u@%2ftmp:5432/postgres",
    "postgresql://u@127.0.0.1/db?host=/tmp",
    "postgresql://u@127.0.0.1/db?host=%2Ftmp",
    "postgresql://u@127.0.0.1/db?hostaddr=10.0.0.1",
    "postgresql://u@127.0.0.1/db?port=5433",
    "postgresql://u@127.0.0.1/db?passfile=/etc/passwd",
    "postgresql://u@127.0.0.1/db?service=x",
    "postgresql://u@127.0.0.1/db?sslrootcert=/etc/passwd",
    "postgresql://u@127.0.0.1/db?dbname=other",
    "postgresql://u@127.0.0.1/db?sslmode=disable&host=/tmp",
    "postgresql://u@a,b/db",
    "postgresql://u@127.0.0.1:1,127.0.0.1:2/db",
])
async def test_unix_sockets_and_redirecting_parameters_are_refused(catalog_sessions, dsn):
    exc = await _refusal(_service(catalog_sessions), dsn)
    assert (exc.status, exc.code) == (422, "invalid_dsn"), exc.detail


async def test_a_host_outside_the_allowlist_is_refused_before_any_connection(catalog_sessions, pg):
    service = _service(catalog_sessions, "10.0.0.0/8, db.internal ,2001:db8::/32")
    for dsn in (pg.dsn(), "postgresql://u@db.internal.evil.com/db", "postgresql://u@169.254.169.254/db",
                "postgresql://u@localhost/db", "postgresql://u@[::1]/db"):
        exc = await _refusal(service, dsn)
        assert (exc.status, exc.code) == (422, "server_host_not_allowed"), dsn
    # a listed host gets as far as the connection (nobody listens there)
    exc = await _refusal(service, "postgresql://u@DB.internal:5432/db")
    assert exc.code == "server_unreachable"


async def test_harmless_dsn_parameters_are_still_ignored(catalog_sessions, pg):
    out = await _service(catalog_sessions).register("test", _body(pg.dsn() + "&application_name=x&connect_timeout=3"))
    assert out.dsn.endswith("/postgres")


async def test_a_listed_server_registers(catalog_sessions, pg):
    service = _service(catalog_sessions, "127.0.0.0/8")
    out = await service.register("test", _body(pg.dsn()))
    assert out.host == "127.0.0.1" and "***" in out.dsn


@pytest.mark.parametrize("value", ["10.0.0.0/33", "db.internal/8", "a b", "host/../x", "1.2.3"])
def test_a_bad_allowlist_is_refused_at_start(value):
    with pytest.raises(SettingsError, match="SERVER_ALLOWED_HOSTS"):
        Settings.from_env({"CATALOG_DATABASE_URL": "postgresql://u@h/db", "SECRET_KEY": SECRET_KEY,
                           "SERVER_ALLOWED_HOSTS": value})


@pytest.fixture
async def listed_api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    from litestar.testing import AsyncTestClient

    from control_plane.api.app import create_app

    settings = msgspec.structs.replace(stack.settings, server_allowed_hosts="10.0.0.0/8")
    async with AsyncTestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {stack.settings.admin_token}"
        yield client


async def test_the_api_refuses_an_unlisted_host(listed_api, pg):
    r = await listed_api.post("/v1/database-servers", json={"name": f"s{secrets.token_hex(6)}", "dsn": pg.dsn()})
    assert r.status_code == 422 and r.json()["code"] == "server_host_not_allowed", r.text
