"""`tenantctl tenants create|list|show|suspend|resume|move|delete` over the admin API."""

from __future__ import annotations

import click

from control_plane.cli.client import segment
from control_plane.cli.operations import OPERATION_COLUMNS, accepted, wait_options
from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

TIERS = click.Choice(["dedicated", "schema", "shared"])
STATUSES = click.Choice(["provisioning", "active", "suspended", "maintenance", "deleting", "deleted", "failed"])
TENANT_COLUMNS = [("SLUG", "slug"), ("ID", "id"), ("TIER", "tier"), ("STATUS", "status"), ("SERVER", "server"),
                  ("PLAN", "plan"), ("REVISION", "tenant_revision")]
TENANT_FIELDS = ["id", "slug", "name", "tier", "status", "server", "tenant_revision", "plan", "billing_status",
                 "created_at", "updated_at"]


@click.group()
def tenants() -> None:
    """Tenants: create, list, show, suspend, resume, move, delete; plan, members, domains, features, erase."""


def _path(key: str) -> str:
    return f"/v1/tenants/{segment(key)}"


def _accepted_line(verb: str):
    def describe(answer: dict) -> None:
        t = answer["tenant"]
        click.echo(f"{verb} {t['slug']} ({t['id']}): {t['status']}, operation {answer['operation_id']}")
    return describe


@api_command(tenants)
@click.argument("slug")
@click.option("--name", default=None, help="display name (default: the slug)")
@click.option("--tier", type=TIERS, default="dedicated", show_default=True)
@click.option("--server", default=None, help="a database server's name (default: the least loaded)")
@click.option("--from-backup", default=None, help="a backup id: the new tenant starts with its data")
@wait_options
def create(as_json: bool, slug: str, name: str | None, tier: str, server: str | None, from_backup: str | None,
           wait_: bool, timeout: float) -> None:
    """Create tenant SLUG (provisioned asynchronously; --wait follows it)."""
    body = {"slug": slug, "name": name or slug, "tier": tier}
    if server:
        body["server"] = server
    if from_backup:
        body["from_backup"] = from_backup
    accepted(call("POST", "/v1/tenants", body), as_json, timeout if wait_ else None, _accepted_line("creating"))


@api_command(tenants, "list")
@click.option("--status", type=STATUSES, default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def list_tenants(as_json: bool, status: str | None, limit: int, cursor: str | None) -> None:
    """Tenants, one a line."""
    page = call("GET", "/v1/tenants", status=status, limit=limit, cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], TENANT_COLUMNS, "no tenants"), page_footer(p)))


@api_command(tenants)
@click.argument("tenant")
@click.option("--operations", "with_operations", is_flag=True, help="list its operations too")
def show(as_json: bool, tenant: str, with_operations: bool) -> None:
    """TENANT (id or slug)."""
    data = call("GET", _path(tenant))
    if with_operations:
        data = {"tenant": data, "operations": call("GET", _path(tenant) + "/operations")["items"]}

    def human(d: dict) -> None:
        fields(d["tenant"] if with_operations else d, TENANT_FIELDS)
        if with_operations:
            click.echo()
            table(d["operations"], OPERATION_COLUMNS, "no operations")
    emit(data, as_json, human)


def _set_status(tenant: str, status: str, as_json: bool) -> None:
    t = call("PATCH", _path(tenant), {"status": status})
    emit(t, as_json, lambda t: click.echo(f"{t['slug']}: {t['status']}"))


@api_command(tenants)
@click.argument("tenant")
def suspend(as_json: bool, tenant: str) -> None:
    """Suspend TENANT: its requests are refused until it is resumed."""
    _set_status(tenant, "suspended", as_json)


@api_command(tenants)
@click.argument("tenant")
def resume(as_json: bool, tenant: str) -> None:
    """Resume a suspended TENANT."""
    _set_status(tenant, "active", as_json)


@api_command(tenants)
@click.argument("tenant")
@click.option("--tier", type=TIERS, required=True, help="the tier to move to (may be its own, with --server)")
@click.option("--server", default=None, help="a database server's name (default: the least loaded)")
@wait_options
def move(as_json: bool, tenant: str, tier: str, server: str | None, wait_: bool, timeout: float) -> None:
    """Move TENANT to another tier and/or server."""
    body = {"tier": tier, **({"server": server} if server else {})}
    accepted(call("POST", _path(tenant) + "/move", body), as_json, timeout if wait_ else None,
             _accepted_line("moving"))


@api_command(tenants)
@click.argument("tenant")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@wait_options
def delete(as_json: bool, tenant: str, yes: bool, wait_: bool, timeout: float) -> None:
    """Delete TENANT and its data (asynchronously)."""
    if not yes:
        click.confirm(f"delete tenant {tenant} and its data?", abort=True)
    accepted(call("DELETE", _path(tenant)), as_json, timeout if wait_ else None, _accepted_line("deleting"))


COMMANDS = (tenants,)
