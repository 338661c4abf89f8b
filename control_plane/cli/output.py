"""How API commands are declared and print: `--json` (the API's JSON, unchanged) or a plain table.

`api_command` puts `--json` on a command and names the variables it reads in its --help; the
tables are ours (a dozen lines: no dependency is worth it for aligned columns)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from control_plane.cli.client import ENV_HELP, Api

Column = tuple[str, str | Callable[[dict], Any]]  # header, key in the item or a function of it


def api_command(group: click.Group | None, name: str | None = None, **kwargs: Any) -> Callable[[Callable], click.Command]:
    """`group.command(name)` (a top-level command without a group) with `--json`, and the API's
    variables named in its help."""
    def decorate(fn: Callable) -> click.Command:
        fn = click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer")(fn)
        epilog = ENV_HELP + (("\n\n" + kwargs.pop("epilog")) if "epilog" in kwargs else "")
        return (group.command if group else click.command)(name, epilog=epilog, **kwargs)(fn)
    return decorate


def call(method: str, path: str, body: Any = None, **params: Any) -> Any:
    with Api.from_env() as api:
        return api.call(method, path, json_body=body, params=params)


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        human(data)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    text = str(value)
    return text.replace("\n", " ").replace("\t", " ")


def table(items: Sequence[dict], columns: Sequence[Column], empty: str = "none") -> None:
    if not items:
        click.echo(f"({empty})")
        return
    rows = [[cell(key(item) if callable(key) else item.get(key)) for _, key in columns] for item in items]
    headers = [header for header, _ in columns]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def fields(item: dict, keys: Sequence[str] | None = None) -> None:
    """One object as `key: value` lines."""
    keys = keys or [k for k, v in item.items() if not isinstance(v, list) or all(not isinstance(x, dict) for x in v)]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        click.echo(f"{key.ljust(width)}  {cell(item.get(key))}")


def page_footer(page: dict) -> None:
    if page.get("next_cursor"):
        click.echo(f"more: --cursor {page['next_cursor']}")
