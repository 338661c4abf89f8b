"""Bounds on what a slow or hostile HTTP client may hold, for the processes we run under uvicorn
(`tenantctl api` and `tenantctl app`; an application of yours can run the same way):

- a request head must arrive whole within `header_timeout` of its first byte (or of the connection),
  else 408 and the connection is closed: a client trickling header bytes holds nothing for long;
- while a request body is being received, at most `body_timeout` may pass without a byte (only
  while the application is reading it), else the connection is closed and the application sees
  the client gone;
- at most `max_header_bytes` of request line and headers and `max_headers` header fields, else 431.

uvicorn's h11 parser bounds only a head that is still incomplete, and has no timeouts before the
response (its keep-alive timeout runs between requests only), hence the protocol class and the
ASGI check below."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from contracts.problems import PROBLEM_JSON, problem_body


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_header_bytes: int = 16 * 1024  # HTTP_MAX_HEADER_BYTES: request line and headers together
    max_headers: int = 100  # HTTP_MAX_HEADERS
    header_timeout: float = 10.0  # HTTP_HEADER_TIMEOUT_SECONDS: a whole request head
    body_timeout: float = 30.0  # HTTP_BODY_TIMEOUT_SECONDS: silence while a body is read
    keep_alive: float = 5.0  # HTTP_KEEP_ALIVE_SECONDS: an idle connection between requests

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "HttpLimits":
        env = os.environ if env is None else env
        names = {"max_header_bytes": "HTTP_MAX_HEADER_BYTES", "max_headers": "HTTP_MAX_HEADERS",
                 "header_timeout": "HTTP_HEADER_TIMEOUT_SECONDS", "body_timeout": "HTTP_BODY_TIMEOUT_SECONDS",
                 "keep_alive": "HTTP_KEEP_ALIVE_SECONDS"}
        values = {field: env[var] for field, var in names.items() if env.get(var)}
        try:
            limits = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"HTTP limits: {exc}") from None
        if min(limits.max_header_bytes, limits.max_headers) < 1 or min(
                limits.header_timeout, limits.body_timeout, limits.keep_alive) <= 0:
            raise ValueError("HTTP_* limits must be more than 0")
        return limits

    def uvicorn_options(self) -> dict[str, Any]:
        return {"http": bounded_protocol(self), "timeout_keep_alive": self.keep_alive,
                "h11_max_incomplete_event_size": self.max_header_bytes}


_TIMEOUT_BODY = b"request head too slow"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


def bounded_protocol(limits: HttpLimits) -> type:
    """uvicorn's h11 protocol with the head deadline and the body silence bound."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm_head()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._cancel("_head_timer")
            if self.conn.their_state is h11.SEND_BODY:
                self._arm_body()
            else:
                self._cancel("_body_timer")

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel("_head_timer")
            self._cancel("_body_timer")
            super().connection_lost(exc)

        def _arm_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_too_slow)

        def _arm_body(self) -> None:
            self._cancel("_body_timer")
            self._body_timer = self.loop.call_later(limits.body_timeout, self._body_too_slow)

        def _cancel(self, name: str) -> None:
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self.cycle is None or self.cycle.response_complete:  # nothing of ours is being sent
                    self.transport.write(_REQUEST_TIMEOUT)
                self.transport.close()

        def _body_too_slow(self) -> None:
            self._body_timer = None
            if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
                return
            if self.flow.read_paused:  # the application is not reading: not the client's fault
                self._arm_body()
                return
            self.transport.close()  # the application's receive() now says the client is gone

    return BoundedH11Protocol


class HeaderLimits:
    """A plain ASGI wrapper: 431 for a request with too many header fields or too large a head
    (a head that arrives in one piece is never checked by the parser)."""

    def __init__(self, app: Any, limits: HttpLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers", ())
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in headers)
            if len(headers) > self.limits.max_headers or size > self.limits.max_header_bytes:
                await _refuse(send)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Any) -> None:
    body = problem_body(431, "headers_too_large", "Request headers too large",
                        "the request has too many or too large header fields")
    await send({"type": "http.response.start", "status": 431,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
