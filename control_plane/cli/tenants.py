"""`tenantctl tenants create|list|show|suspend|resume|move|delete [--erase]` over the admin API."""

from __future__ import annotations

import time

import click

from control_plane.cli.client import Api, segment
from control_plane.cli.operations import OPERATION_COLUMNS, accepted, finish_wait, wait_for_operation, wait_options
from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

TIERS = click.Choice(["dedicated", "schema", "shared"])
STATUSES = click.Choice(["provisioning", "active", "suspended", "maintenance", "deleting", "deleted", "failed"])
TENANT_COLUMNS = [("SLUG", "slug"), ("ID", "id"), ("TIER", "tier"), ("STATUS", "status"), ("SERVER", "server"),
                  ("PLAN", "plan"), ("REVISION", "tenant_revision")]
PLACE_COLUMNS = [("PLACE", "place"), ("DONE", "done"), ("AT", "at"), ("DETAILS", "details")]
TENANT_FIELDS = ["id", "slug", "name", "tier", "status", "server", "tenant_revision", "plan", "billing_status",
                 "created_at", "updated_at"]


@click.group()
def tenants() -> None:
    """Tenants: create, list, show, suspend, resume, move, delete; plan, members, domains, features, erase."""


def _path(key: str) -> str:
    return f"/v1/tenants/{segment(key)}"


def show_erasure(d: dict) -> None:
    """An erasure report: its dates, then one line per place."""
    fields(d, ["tenant_id", "status", "requested_at", "completed_at", "operation_id"])
    click.echo()
    table(d.get("places") or [], PLACE_COLUMNS, "no places")


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
@click.option("--erase", is_flag=True, help="then erase it: backups, keys, Stripe customer and personal data go for "
                                           "good (--wait waits for the erasure too and prints its report)")
@wait_options
def delete(as_json: bool, tenant: str, yes: bool, erase: bool, wait_: bool, timeout: float) -> None:
    """Delete TENANT and its data (asynchronously); with --erase, erase it once deleted."""
    if not yes:
        click.confirm(f"delete tenant {tenant} and its data{' and erase it for good' if erase else ''}?", abort=True)
    answer = call("DELETE", _path(tenant), erase="true" if erase else None)
    if not erase:
        accepted(answer, as_json, timeout if wait_ else None, _accepted_line("deleting"))
        return
    if not wait_:
        emit(answer, as_json, lambda a: (_accepted_line("deleting")(a), click.echo(f"then erasure {a['erasure_id']}")))
        return
    _delete_then_erase(answer, as_json, timeout)


def _delete_then_erase(answer: dict, as_json: bool, timeout: float) -> None:
    """Wait for the delete, then for the erasure its finish queued; the erasure's report at the end."""
    if not as_json:
        _accepted_line("deleting")(answer)
    deadline = time.monotonic() + timeout
    with Api.from_env() as api:
        deleted = wait_for_operation(api, str(answer["operation_id"]), timeout, progress=not as_json)
        if deleted["state"] != "succeeded":
            finish_wait(deleted, as_json)  # exits 1: no erasure starts after a failed delete
        erased = wait_for_operation(api, str(answer["erasure_id"]), max(deadline - time.monotonic(), 0),
                                    progress=not as_json)
        if erased["state"] != "succeeded":
            finish_wait(erased, as_json)
        report = api.get(_path(answer["tenant"]["id"]) + "/erasure")
    emit(report, as_json, show_erasure)


COMMANDS = (tenants,)
