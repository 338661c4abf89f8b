"""`tenantctl operations list|show|wait|retry|cancel`, and the wait other commands' `--wait` uses."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from control_plane.cli.client import Api, ApiError, segment
from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

ENDED = ("succeeded", "failed")
POLL_SECONDS = 5  # each long poll (the API holds it at most 30 s); short enough to redraw the bar

OPERATION_COLUMNS = [("ID", "id"), ("KIND", "kind"), ("TENANT", "tenant_id"), ("STATE", "state"),
                     ("CREATED", "created_at"), ("ERROR", "error")]
STEP_COLUMNS = [("STEP", "name"), ("STATE", "state"), ("ATTEMPTS", "attempts"), ("ERROR", "error")]


@click.group()
def operations() -> None:
    """Operations (the durable jobs behind every lifecycle change): list, show, wait, retry, cancel."""


def show_operation(op: dict) -> None:
    fields(op, ["id", "kind", "tenant_id", "state", "error", "created_at", "started_at", "finished_at"])
    if op.get("steps"):
        click.echo()
        table(op["steps"], STEP_COLUMNS)


@api_command(operations, "list")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed"]), default=None)
@click.option("--kind", default=None, help="e.g. create_tenant, move_tenant")
@click.option("--tenant", default=None, help="a tenant id or slug")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def list_operations(as_json: bool, state: str | None, kind: str | None, tenant: str | None, limit: int,
                    cursor: str | None) -> None:
    """Operations across the fleet, newest first."""
    page = call("GET", "/v1/operations", state=state, kind=kind, tenant=tenant, limit=limit, cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], OPERATION_COLUMNS, "no operations"), page_footer(p)))


@api_command(operations)
@click.argument("operation_id")
def show(as_json: bool, operation_id: str) -> None:
    """One operation and its steps."""
    emit(call("GET", f"/v1/operations/{segment(operation_id)}"), as_json, show_operation)


@api_command(operations)
@click.argument("operation_id")
def retry(as_json: bool, operation_id: str) -> None:
    """Resume a failed operation from its failed step."""
    emit(call("POST", f"/v1/operations/{segment(operation_id)}/retry"), as_json,
         lambda op: click.echo(f"operation {op['id']} ({op['kind']}) {op['state']}"))


@api_command(operations)
@click.argument("operation_id")
def cancel(as_json: bool, operation_id: str) -> None:
    """Cancel a queued or running operation at its next step boundary (its undo runs)."""
    emit(call("POST", f"/v1/operations/{segment(operation_id)}/cancel"), as_json,
         lambda op: click.echo(f"operation {op['id']} ({op['kind']}) {op['state']}, cancel requested"))


def wait_for_operation(api: Api, operation_id: str, timeout: float, progress: bool) -> dict:
    """Long-polls the operation until it ends or `timeout` passes; on a TTY (stderr), a bar of its
    steps with the one under way."""
    deadline = time.monotonic() + timeout
    path = f"/v1/operations/{segment(operation_id)}"
    op = api.get(path)
    bar = None
    if progress and sys.stderr.isatty():  # drawn full at once when it has ended already
        bar = click.progressbar(length=max(len(op["steps"]), 1), label=f"{op['kind']}", file=sys.stderr,
                                show_pos=True, item_show_func=lambda s: s)
        bar.__enter__()
    try:
        while True:
            if bar is not None:
                done = sum(1 for s in op["steps"] if s["state"] in ("succeeded", "skipped"))
                bar.update(done - bar.pos, _current_step(op))
            if op["state"] in ENDED:
                return op
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError("wait_timeout", f"operation {operation_id} is still {op['state']} after "
                                               f"{timeout:g} s (--timeout)")
            wait = min(POLL_SECONDS, left)
            op = api.call("GET", path, params={"wait": wait}, timeout=wait + 30)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _current_step(op: dict) -> str:
    for step in op["steps"]:
        if step["state"] not in ("succeeded", "skipped"):
            return f"{step['name']} ({step['state']})"
    return op["state"]


def finish_wait(op: dict, as_json: bool) -> None:
    """Print the ended operation; exit status 1 when it failed."""
    emit(op, as_json, lambda o: click.echo(f"operation {o['id']} ({o['kind']}) {o['state']}"
                                           + (f": {o['error']}" if o.get("error") else "")))
    if op["state"] != "succeeded":
        sys.exit(1)


@api_command(operations)
@click.argument("operation_id")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True, help="seconds")
def wait(as_json: bool, operation_id: str, timeout: float) -> None:
    """Wait for an operation to end (a progress bar on a terminal); exit status 1 unless it succeeded."""
    with Api.from_env() as api:
        op = wait_for_operation(api, operation_id, timeout, progress=not as_json)
    finish_wait(op, as_json)


def accepted(answer: dict, as_json: bool, wait_seconds: float | None, describe: Any) -> None:
    """What a command that starts an operation prints; with `--wait`, the operation's end too."""
    if wait_seconds is None:
        emit(answer, as_json, describe)
        return
    if not as_json:
        describe(answer)
    with Api.from_env() as api:
        op = wait_for_operation(api, str(answer["operation_id"]), wait_seconds, progress=not as_json)
    finish_wait(op, as_json)


COMMANDS = (operations,)


def wait_options(fn: Any) -> Any:
    """`--wait` and `--timeout` for a command that starts an operation."""
    fn = click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
                      help="seconds --wait waits")(fn)
    return click.option("--wait", "wait_", is_flag=True,
                        help="wait for the operation to end; exit status 1 unless it succeeded")(fn)
