"""Errors answered as RFC 9457 problem details, and the one rendering of their body.

Both planes' errors derive from `ProblemError`; each application's Litestar glue only wraps
`problem_body()` in a response with `PROBLEM_JSON` and the error's headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """An error with an HTTP status and a stable code. `headers` go on the response; `extra` are
    more members of the body (e.g. `"operation_id"`, `"upgrade": true`)."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    headers: Mapping[str, str] = {}
    extra: Mapping[str, Any] = {}

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if extra:
            self.extra = extra


def problem_body(status: int, code: str, title: str, detail: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """The JSON body of a problem: `type` is a URN built from the code, which is repeated as `code`."""
    body = {"type": f"urn:tenantplane:problem:{code}", "title": title, "status": status, "detail": detail,
            "code": code, **(extra or {})}
    return msgspec.json.encode(body)


def error_body(error: ProblemError) -> bytes:
    return problem_body(error.status, error.code, error.title, error.detail, error.extra)
