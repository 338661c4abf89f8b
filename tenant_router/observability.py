"""Logging and request context shared by the router and the control plane.

- `configure_logging(level, json)`: structlog renders every log line, including those of plain
  `logging.getLogger(...)` loggers (through structlog's ProcessorFormatter on the root handler), and
  merges the request's context variables into each line (`request_id`, and `tenant_id` /
  `tenant_slug` once the router has resolved the tenant).
- `RequestContextMiddleware`: gives each request an id (the caller's `X-Request-ID` when it is a
  safe token, else a fresh one) and binds it for the rest of the request.
- `response_hook(...)`: a `before_send` hook that echoes the id in `X-Request-ID`, writes one access
  log line per request and hands status and duration to a metrics callback. It is a before_send
  hook rather than part of the middleware because Litestar renders exceptions raised by
  middleware (a gate refusing a tenant) outside the middleware stack: only before_send sees every
  response.

Nothing here imports another module of ours, so the control plane may use it too.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

import structlog
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_STATE = "request_id"  # scope["state"] key
_STARTED_STATE = "tenantplane_started"
_STATUS_STATE = "tenantplane_status"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HANDLER_MARK = "_tenantplane_handler"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# probes and scrapes: their access lines are logged at DEBUG only
QUIET_PATHS = re.compile(r"^/(health|metrics)(/|$)")

access_log = logging.getLogger("tenantplane.access")


def _drop_color_message(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)  # uvicorn's copy of the message with ANSI colours
    return event


# -- logging ---------------------------------------------------------------------------------------
def configure_logging(level: str | int = "INFO", json: bool = False, *, stream: IO[str] | None = None) -> None:
    """Route structlog and stdlib logging through one structlog renderer (JSON lines or console).
    Calling it again replaces the previous configuration."""
    if isinstance(level, str):
        numeric = logging.getLevelName(level.strip().upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    out = stream if stream is not None else sys.stderr
    if json:
        renderers: list[Any] = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # plain tracebacks: structlog's rich ones would print local variables (secrets among them)
        renderers = [structlog.dev.ConsoleRenderer(colors=bool(getattr(out, "isatty", lambda: False)()),
                                                   exception_formatter=structlog.dev.plain_traceback)]
    formatter = structlog.stdlib.ProcessorFormatter(
        # for stdlib records: the same context, plus anything passed as `extra=`
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )
    # a plain StreamHandler formats in the logging thread / task itself, so the context variables
    # of the request are still there (a QueueHandler would format them away in another thread)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


# -- metrics exposition ----------------------------------------------------------------------------
def render_metrics(registry: Any, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asks for (Prometheus text or OpenMetrics)."""
    from prometheus_client.exposition import choose_encoder, generate_latest

    try:
        encoder, content_type = choose_encoder(accept or "")
    except Exception:  # a malformed Accept (e.g. "version=x") makes the client library raise
        encoder, content_type = generate_latest, "text/plain; version=0.0.4; charset=utf-8"
    return encoder(registry), content_type


# -- request ids -----------------------------------------------------------------------------------
# new ids: a random per-process prefix and a counter (unique without a system call per request)
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:  # a forked worker process must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_new_id_prefix)


def request_id_from(value: str | None) -> str:
    """The caller's id when it is a safe token (it ends up in logs and headers), else a new one."""
    if value is not None and _SAFE_REQUEST_ID.fullmatch(value):
        return value
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def ensure_request_id(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    request_id = state.get(REQUEST_ID_STATE)
    if request_id is None:
        request_id = state[REQUEST_ID_STATE] = request_id_from(_header(scope, b"x-request-id"))
    return request_id


def begin_request(scope: Scope) -> str:
    """The request's id, and the start of its timing (read by `response_hook`)."""
    request_id = ensure_request_id(scope)
    scope["state"][_STARTED_STATE] = time.perf_counter()
    return request_id


class RequestContextMiddleware(ASGIMiddleware):
    """Binds `request_id` for the whole request (outermost of our middleware)."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        with structlog.contextvars.bound_contextvars(request_id=begin_request(scope)):
            await next_app(scope, receive, send)


def method_label(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in METHODS else "OTHER"  # clients choose methods: bound the label


def printable(text: str, limit: int = 256) -> str:
    """`text` cut to `limit` with control characters escaped, for a log line: a client's CR or LF
    (a decoded %0a in a path, say) must not start a line of its own that looks like ours."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()


def _set_request_id_header(message: Message, request_id: str) -> None:
    """X-Request-ID on the response start message, replacing one the application set (on the raw
    header list: Litestar's MutableScopeHeaders costs more than the rest of this hook)."""
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _REQUEST_ID_NAME]
    headers.append((_REQUEST_ID_NAME, request_id.encode("latin-1")))
    message["headers"] = headers


OnComplete = Callable[[Scope, int, float], None]
LogFields = Callable[[Scope], Mapping[str, Any]]


def response_hook(on_complete: OnComplete | None = None, log_fields: LogFields | None = None):
    """A before_send hook: X-Request-ID on every response; after the last body message, one access
    log line and `on_complete(scope, status, seconds)` for requests that went through
    RequestContextMiddleware (requests matching no route have no timing and are not counted)."""

    async def hook(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            state = scope.setdefault("state", {})
            state[_STATUS_STATE] = message["status"]
            _set_request_id_header(message, ensure_request_id(scope))
            return
        if message["type"] != "http.response.body" or message.get("more_body", False):
            return
        state = scope.get("state", {})
        started = state.pop(_STARTED_STATE, None)
        status = state.get(_STATUS_STATE)
        if started is None or status is None:
            return
        seconds = time.perf_counter() - started
        if on_complete is not None:
            on_complete(scope, status, seconds)
        level = logging.DEBUG if QUIET_PATHS.match(scope.get("path", "")) else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        fields = dict(log_fields(scope)) if log_fields is not None else {}
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        # bound here too: an error rendered outside the middleware is sent after its context is gone
        with structlog.contextvars.bound_contextvars(request_id=ensure_request_id(scope), **fields):
            access_log.log(level, "request", extra={
                "method": method_label(scope), "path": printable(raw_path.decode("latin-1")),
                "status": status, "duration_ms": round(seconds * 1000, 2)})

    return hook
