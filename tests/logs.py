"""Capture what configure_logging() writes (JSON lines), and put logging back as it was afterwards."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from tenant_router.observability import configure_logging


@contextmanager
def json_log_lines(level: str = "DEBUG") -> Iterator[Callable[[], list[dict]]]:
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(level, json=True, stream=stream)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        root.handlers[:] = old_handlers
        root.setLevel(old_level)
        structlog.reset_defaults()
