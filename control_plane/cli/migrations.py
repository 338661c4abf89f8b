"""Fleet migrations over the admin API: `tenantctl migrate` (start and follow, as before) and
`tenantctl migrations start|list|show`."""

from __future__ import annotations

import sys
import time

import click

from control_plane.cli.client import Api, segment
from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

RUN_COLUMNS = [("ID", "id"), ("TARGET", "target_revision"), ("STATE", "state"), ("WAVE", "current_wave"),
               ("COUNTS", lambda r: {k: v for k, v in r["counts"].items() if v}), ("CREATED", "created_at"),
               ("ERROR", "error")]
TENANT_COLUMNS = [("SLUG", "slug"), ("WAVE", "wave"), ("STATE", "state"), ("FROM", "from_revision"),
                  ("TO", "to_revision"), ("ERROR", "error")]
SETTLED = ("succeeded", "failed", "skipped")


@click.group()
def migrations() -> None:
    """Fleet migrations of the tenant schema: start, list, show."""


def _start_options(fn):
    for option in reversed([
        click.option("--to", "target", default="head", show_default=True, help="target tenant revision"),
        click.option("--tenant", "tenants", multiple=True, help="a tenant id or slug (repeat); default: every tenant"),
        click.option("--canary", default=5, show_default=True, help="tenants in the canary wave"),
        click.option("--wave-size", default=50, show_default=True),
        click.option("--halt-on-error", is_flag=True, help="stop after a wave in which a tenant failed"),
    ]):
        fn = option(fn)
    return fn


def _start(target: str, tenants: tuple[str, ...], canary: int, wave_size: int, halt_on_error: bool) -> dict:
    return call("POST", "/v1/migrations", {"target": target, "tenants": list(tenants) or None, "canary": canary,
                                           "wave_size": wave_size, "halt_on_error": halt_on_error})


def _started(run: dict) -> None:
    click.echo(f"migration run {run['id']}: {len(run['tenants'])} tenant(s) to {run['target_revision']}")


def show_run(run: dict) -> None:
    fields(run, ["id", "target_revision", "state", "current_wave", "canary_size", "wave_size", "halt_on_error",
                 "error", "created_at", "finished_at"])
    click.echo()
    table(run["tenants"], TENANT_COLUMNS, "no tenants")
    click.echo(f"{run['state']}: " + ", ".join(f"{k} {v}" for k, v in run["counts"].items() if v))


def follow(run: dict, progress: bool) -> dict:
    """Polls the run until it stops running; a bar of settled tenants on a terminal."""
    path = f"/v1/migrations/{segment(str(run['id']))}"
    with Api.from_env() as api, click.progressbar(length=max(len(run["tenants"]), 1), label="migrating",
                                                  show_pos=True, file=sys.stderr) as bar:
        done = 0
        while True:
            now_done = sum(run["counts"].get(k, 0) for k in SETTLED)
            if progress:
                bar.update(now_done - done)
            done = now_done
            if run["state"] != "running":
                return run
            time.sleep(0.5)
            run = api.get(path)


@api_command(migrations)
@_start_options
def start(as_json: bool, target: str, tenants: tuple[str, ...], canary: int, wave_size: int,
          halt_on_error: bool) -> None:
    """Start a fleet migration (workers do the work; `migrations show ID` follows it)."""
    emit(_start(target, tenants, canary, wave_size, halt_on_error), as_json, _started)


@api_command(migrations, "list")
@click.option("--state", type=click.Choice(["running", "succeeded", "failed", "halted"]), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def list_runs(as_json: bool, state: str | None, limit: int, cursor: str | None) -> None:
    """Fleet migration runs, newest first, with their per-state tenant counts."""
    page = call("GET", "/v1/migrations", state=state, limit=limit, cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], RUN_COLUMNS, "no migration runs"), page_footer(p)))


@api_command(migrations)
@click.argument("run_id")
def show(as_json: bool, run_id: str) -> None:
    """A run's progress and per-tenant report."""
    emit(call("GET", f"/v1/migrations/{segment(run_id)}"), as_json, show_run)


@api_command(None)
@_start_options
@click.option("--no-wait", is_flag=True, help="start the run and print its id")
def migrate(as_json: bool, target: str, tenants: tuple[str, ...], canary: int, wave_size: int, halt_on_error: bool,
            no_wait: bool) -> None:
    """Migrate the fleet (workers do the work; this follows progress and prints a report; exit status 1
    unless the run succeeded)."""
    run = _start(target, tenants, canary, wave_size, halt_on_error)
    if no_wait:
        emit(run, as_json, _started)
        return
    if not as_json:
        _started(run)
    run = follow(run, progress=not as_json)
    emit(run, as_json, show_run)
    if run["state"] != "succeeded":
        sys.exit(1)


COMMANDS = (migrations, migrate)
