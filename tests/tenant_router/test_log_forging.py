"""A client's control characters never reach a log line raw: a %0a in a path (decoded to a line
feed) cannot end our line and start one that looks like ours."""

from __future__ import annotations

import io

from litestar import Litestar, get
from litestar.testing import TestClient

from tenant_router.observability import RequestContextMiddleware, configure_logging, printable, response_hook
from tenant_router.problems import EXCEPTION_HANDLERS

FORGED = "%0a%0d2026-01-01 00:00:00 [info] admin login ok%1b[2J"


@get("/boom/{anything:str}")
async def boom(anything: str) -> None:
    raise RuntimeError("unexpected")


@get("/fine/{anything:str}")
async def fine(anything: str) -> str:
    return "ok"


def _logged(path: str) -> str:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    try:
        app = Litestar([boom, fine], exception_handlers=EXCEPTION_HANDLERS, middleware=[RequestContextMiddleware()],
                       before_send=[response_hook()], logging_config=None)
        with TestClient(app) as client:
            client.get(path)
    finally:
        configure_logging("INFO")
    return out.getvalue()


def test_a_forged_line_in_the_path_of_an_unhandled_error_stays_on_our_line():
    text = _logged("/boom/x" + FORGED)
    lines = [line for line in text.splitlines() if "unhandled error" in line or "admin login ok" in line]
    assert lines and all("unhandled error" in line for line in lines), text
    assert "\x1b" not in text


def test_a_forged_line_in_the_access_log_path_stays_on_our_line():
    text = _logged("/fine/x" + FORGED)
    assert not any(line.lstrip().startswith("2026-01-01") for line in text.splitlines()), text
    assert "\x1b" not in text and "\r" not in text


def test_printable_escapes_every_control_character():
    assert printable("a\nb\rc\x00d\x1b\u2028") == "a\\nb\\rc\\x00d\\x1b\\u2028"
    assert printable("plain /path?x=1") == "plain /path?x=1"
