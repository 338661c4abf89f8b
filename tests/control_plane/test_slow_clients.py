"""Slow and greedy clients against the real uvicorn processes (`tenantctl api`, `tenantctl app`):
a head that trickles in, a body that stops coming, and heads too large or with too many fields
are each cut off within their bounds."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from control_plane.embedded import free_port
from tests.conftest import ROOT, Stack, stop_process

LIMITS = {"HTTP_HEADER_TIMEOUT_SECONDS": "1", "HTTP_BODY_TIMEOUT_SECONDS": "1"}


@pytest.fixture(scope="module", params=["api", "app"])
def server(request, stack: Stack) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = stack.env(API_PORT=str(port), APP_PORT=str(port), ADMIN_TOKEN=stack.settings.admin_token, **LIMITS)
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", request.param], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, f"tenantctl {request.param} did not start"
            time.sleep(0.1)
        yield request.param, port
    finally:
        stop_process(proc)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {within} s; got {received[:200]!r}") from None
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_request_head_that_trickles_in_is_cut_off(server):
    _, port = server
    with _connect(port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x.localhost\r\n")
        for _ in range(3):  # a byte now and then keeps nothing open past the head's deadline
            time.sleep(0.4)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        response, _ = _read_until_closed(sock, 4)
    assert response == b"" or _status(response) == 408


def test_a_connection_that_never_sends_a_request_is_closed(server):
    _, port = server
    with _connect(port) as sock:
        _read_until_closed(sock, 4)


def test_a_body_that_stops_coming_ends_the_request(server, stack: Stack):
    role, port = server
    if role != "api":
        pytest.skip("the demo app refuses an unknown tenant before reading a body")
    with _connect(port) as sock:
        sock.sendall(b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + stack.settings.admin_token.encode() + b"\r\n"
                     b"Content-Length: 100\r\n\r\n{\"slug\":")
        _read_until_closed(sock, 4)


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 100_000 + b"\r\n",
    b"".join(b"X-H%d: v\r\n" % i for i in range(5000)),
], ids=["100KB-header", "5000-headers"])
def test_heads_too_large_or_with_too_many_fields_are_refused(server, headers):
    _, port = server
    with _connect(port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x.localhost\r\n" + headers + b"\r\n")
        response, _ = _read_until_closed(sock, 10)
    assert response and _status(response) in (400, 431), response[:200]
    if len(headers) < 100_000:  # the whole head fits the parser's buffer: our check answers
        assert _status(response) == 431 and b"headers_too_large" in response, response[:300]


def test_ordinary_requests_still_pass(server):
    role, port = server
    with _connect(port) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x.localhost\r\nConnection: close\r\n\r\n")
        response, _ = _read_until_closed(sock, 10)
    assert _status(response) in ((200,) if role == "api" else (200, 404)), response[:300]
