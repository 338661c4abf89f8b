"""`tenantctl events list|redeliver`: lifecycle events and their webhook delivery; an abandoned one
sent again."""

from __future__ import annotations

import click

from control_plane.cli.client import segment
from control_plane.cli.output import api_command, call, emit, page_footer, table
from provisioning.events import DELIVERY_STATES, EVENT_TYPES

EVENT_COLUMNS = [("ID", "id"), ("TYPE", "type"), ("TENANT", "tenant_id"), ("OCCURRED", "occurred_at"),
                 ("DELIVERY", lambda e: e["delivery"]["state"]), ("ATTEMPTS", lambda e: e["delivery"]["attempts"]),
                 ("ERROR", lambda e: e["delivery"]["last_error"])]


@click.group()
def events() -> None:
    """Lifecycle events (tenant created, moved, restored, suspended, resumed, deleted): list, redeliver."""


@api_command(events, "list")
@click.option("--state", type=click.Choice(DELIVERY_STATES), default=None, help="the webhook delivery's state")
@click.option("--type", "type_", type=click.Choice(EVENT_TYPES), default=None)
@click.option("--tenant", default=None, help="a tenant id or slug")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def list_events(as_json: bool, state: str | None, type_: str | None, tenant: str | None, limit: int,
                cursor: str | None) -> None:
    """Lifecycle events, newest first, with where their webhook delivery stands."""
    page = call("GET", "/v1/events", state=state, type=type_, tenant=tenant, limit=limit, cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], EVENT_COLUMNS, "no events"), page_footer(p)))


@api_command(events)
@click.argument("event_id", required=False)
@click.option("--tenant", default=None, help="every abandoned event of this tenant (id or slug)")
@click.option("--type", "type_", type=click.Choice(EVENT_TYPES), default=None, help="every abandoned event of this type")
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True, help="with --tenant or --type")
def redeliver(as_json: bool, event_id: str | None, tenant: str | None, type_: str | None, limit: int) -> None:
    """Send an abandoned event again, or those of a tenant and/or a type (the next delivery round
    posts them, with a new give-up window)."""
    if (event_id is None) == (tenant is None and type_ is None):
        raise click.UsageError("give an EVENT_ID, or --tenant and/or --type")
    if event_id is not None:
        emit(call("POST", f"/v1/events/{segment(event_id)}/redeliver"), as_json,
             lambda e: click.echo(f"event {e['id']} ({e['type']}) {e['delivery']['state']}"))
        return
    body = {"limit": limit, **({"tenant": tenant} if tenant else {}), **({"type": type_} if type_ else {})}
    emit(call("POST", "/v1/events/redeliver", body), as_json,
         lambda r: click.echo(f"{len(r['ids'])} event(s) pending again" + (" (more: run it again)" if r["more"] else "")))


COMMANDS = (events,)
