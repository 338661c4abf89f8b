"""The one map from exceptions to RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    SerializationException,
    ValidationException,
)

from control_plane.errors import ControlPlaneError

log = logging.getLogger("tenantplane.api")

PROBLEM_JSON = "application/problem+json"

_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("route_not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


def problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    body = {"type": f"urn:tenantplane:problem:{code}", "title": title, "status": status,
            "detail": detail, "code": code, **extra}
    return Response(content=msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON,
                    headers=headers)


def _control_plane_error(_: Request, exc: ControlPlaneError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="tenantplane"'} if exc.status == 401 else None
    headers = {**(headers or {}), **getattr(exc, "headers", {})} or None  # e.g. Retry-After
    return problem(exc.status, exc.code, exc.title, exc.detail, headers, **exc.extra)


def _malformed() -> Response:
    return problem(400, "malformed_json", "Malformed JSON", "the request body is not valid JSON")


def _validation_error(_: Request, exc: ValidationException) -> Response:
    if "malformed" in str(exc.detail or "").lower():
        return _malformed()
    errors = [
        {"key": str(item.get("key", ""))[:100], "source": str(getattr(item.get("source"), "value", item.get("source")))[:20],
         "message": str(item.get("message", ""))[:300]}
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return problem(422, "validation_failed", "Invalid request", "the request did not pass validation",
                   errors=errors)


def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code >= 500:
        return _internal_error(request, exc)
    if exc.status_code == 400 and (isinstance(exc.__cause__, SerializationException)
                                   or "malformed" in str(exc.detail).lower()):
        return _malformed()
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    return problem(exc.status_code, code, title, str(exc.detail)[:300], exc.headers or None)


def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
              exc_info=exc)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred; it has been logged")


def _undecodable(_: Request, exc: Exception) -> Response:
    # raised by the JSON decoder itself for bodies nested too deeply or not valid UTF-8
    return _malformed()


_JSON_TYPES = ("application/json",)


async def require_json_body(request: Request) -> None:
    """Refuse request bodies that are not JSON (415) before anything decodes them."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    length = request.headers.get("content-length")
    if length == "0" or (length is None and "transfer-encoding" not in request.headers):
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise HTTPException(status_code=415, detail="send the body as application/json")


EXCEPTION_HANDLERS = {
    ControlPlaneError: _control_plane_error,
    RecursionError: _undecodable,
    UnicodeDecodeError: _undecodable,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem", "require_json_body", "MediaType"]
