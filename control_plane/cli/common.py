"""What every command needs: settings from the environment, logging, the worker's event loop."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Coroutine
from typing import Any

import click

from control_plane.settings import Settings, SettingsError


def load_settings() -> Settings:
    """The product's settings, for commands that open the catalog themselves; an error names the
    environment variable (each is its field's name in capitals), never the struct's field."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        message = re.sub(r"Object missing required field `([a-z_]+)`",
                         lambda m: f"set the environment variable {m.group(1).upper()}", str(exc))
        message = re.sub(r"at `\$\.([a-z_]+)`", lambda m: f"in {m.group(1).upper()}", message)
        raise click.ClickException(message) from None


def configure_process_logging() -> str:
    """structlog for every log line (LOG_FORMAT=json for JSON lines); returns uvicorn's log level."""
    from tenant_router.observability import configure_logging

    level = os.environ.get("LOG_LEVEL", "INFO")
    try:
        configure_logging(level, json=os.environ.get("LOG_FORMAT", "").strip().lower() == "json")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return level.strip().lower()


def run_event_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run(main)` on uvloop (libuv's loop, written in C) where it is installed, as it is
    everywhere but Windows: a worker spends much of its CPU in the event loop's socket handling
    (a fleet migration opens one connection per tenant database), and uvloop roughly halves that.
    uvicorn picks uvloop by itself for the API and the tenant app."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
