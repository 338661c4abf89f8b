"""The Litestar side of problem details, for every application of ours: a response for any
`ProblemError`, and the answers to what Litestar itself refuses (a body that does not validate,
malformed JSON, HTTP errors) or what nobody caught (500, logged). The body is `contracts.problems`'."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    SerializationException,
    ValidationException,
)

from contracts.problems import PROBLEM_JSON, ProblemError, error_body, problem_body
from tenant_router.observability import printable

log = logging.getLogger("tenantplane.api")  # every app of ours logs its unhandled errors under this name

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


def problem(status: int, code: str, title: str, detail: str, headers: Mapping[str, str] | None = None,
            **extra: Any) -> Response:
    return Response(content=problem_body(status, code, title, detail, extra), status_code=status,
                    media_type=PROBLEM_JSON, headers=headers)


def error_response(error: ProblemError) -> Response:
    return Response(content=error_body(error), status_code=error.status, media_type=PROBLEM_JSON,
                    headers=error.headers or None)


def _problem_error(_: Request, exc: ProblemError) -> Response:
    return error_response(exc)


def _malformed() -> Response:
    return problem(400, "malformed_json", "Malformed JSON", "the request body is not valid JSON")


def _public_name(request: Request, key: object) -> str:
    """The name the client sent: a parameter declared `Parameter(query="state")` (Litestar reserves
    some argument names) is reported as `state`, not as the handler's argument."""
    handler = request.scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    field = signature.parameters.get(key) if signature is not None and isinstance(key, str) else None
    definition = getattr(field, "kwarg_definition", None)
    return str(getattr(definition, "query", None) or getattr(definition, "header", None) or key)


def _validation_error(request: Request, exc: ValidationException) -> Response:
    if "malformed" in str(exc.detail or "").lower():
        return _malformed()
    errors = [
        {"key": _public_name(request, item.get("key", ""))[:100],
         "source": str(getattr(item.get("source"), "value", item.get("source")))[:20],
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
    log.error("unhandled error on %s %s: %s", printable(request.method, 16), printable(request.url.path),
              type(exc).__name__,
              exc_info=exc)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred; it has been logged")


def _undecodable(_: Request, exc: Exception) -> Response:
    # raised by the JSON decoder itself for bodies nested too deeply or not valid UTF-8
    return _malformed()


async def require_json_body(request: Request) -> None:
    """Refuse request bodies that are not JSON (415) before anything decodes them."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    length = request.headers.get("content-length")
    if length == "0" or (length is None and "transfer-encoding" not in request.headers):
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise HTTPException(status_code=415, detail="send the body as application/json")


# Litestar picks the handler of the nearest class in the exception's MRO, so an application can
# add a more specific one (the router plugin does, for RouterError, to count refusals).
EXCEPTION_HANDLERS = {
    ProblemError: _problem_error,
    RecursionError: _undecodable,
    UnicodeDecodeError: _undecodable,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}
