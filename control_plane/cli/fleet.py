"""`tenantctl reconcile`, `tenantctl overview` and `tenantctl audit` over the admin API."""

from __future__ import annotations

import click

from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

FINDING_COLUMNS = [("KIND", "kind"), ("SERVER", "server"), ("OBJECT", "object"), ("TENANT", "tenant_id"),
                   ("DETAIL", "detail")]
AUDIT_COLUMNS = [("AT", "at"), ("ACTOR", "actor"), ("ACTION", "action"), ("TARGET", "target_type"),
                 ("ID", "target_id"), ("DETAILS", "details")]
FILL_COLUMNS = [("SERVER", "name"), ("STATUS", "status"), ("TENANTS", "tenants"),
                ("CAPACITY", "capacity_databases"), ("FILL", lambda s: f"{s['fill']:.0%}")]


def _report(report: dict) -> None:
    click.echo(f"servers checked: {', '.join(report['servers_checked']) or 'none'}")
    if report["unreachable"]:
        click.echo(f"unreachable: {', '.join(report['unreachable'])}")
    if report.get("places_checked") or report.get("places_unreachable"):
        counted = report.get("leftovers_checked") or {}
        click.echo(f"searched for leftovers of {counted.get('erased_tenants', 0)} erased and "
                   f"{counted.get('deleted_tenants', 0)} deleted tenant(s): {', '.join(report['places_checked']) or 'nowhere'}"
                   + (f"; unreachable: {', '.join(report['places_unreachable'])}" if report["places_unreachable"] else ""))
    if report["findings"]:
        table(report["findings"], FINDING_COLUMNS)
    click.echo(f"{len(report['findings'])} finding(s)")
    if report.get("spares"):
        click.echo(f"{len(report['spares'])} spare database(s), not counted as findings")


@api_command(None)
@click.option("--latest", is_flag=True, help="print the last scheduled report instead of running one now")
def reconcile(as_json: bool, latest: bool) -> None:
    """Compare the catalog with every server and report drift and orphans (drops nothing)."""
    emit(call("GET" if latest else "POST", "/v1/reconciliation"), as_json, _report)


@api_command(None)
def overview(as_json: bool) -> None:
    """The fleet at a glance: tenants by status and tier, behind head, operations, server fill."""
    def human(o: dict) -> None:
        fields(o, ["tenants_by_status", "tenants_by_tier", "tenants_behind_head", "head_revision",
                   "operations_by_state", "failed_operations", "running_migrations"])
        click.echo()
        table(o["servers"], FILL_COLUMNS, "no servers")
    emit(call("GET", "/v1/overview"), as_json, human)


@api_command(None)
@click.option("--tenant", default=None, help="a tenant id or slug")
@click.option("--actor", default=None, help="who did it (an admin key's name)")
@click.option("--action", default=None, help="e.g. tenant.create")
@click.option("--since", default=None, help="entries at or after this RFC 3339 time")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def audit(as_json: bool, tenant: str | None, actor: str | None, action: str | None, since: str | None, limit: int,
          cursor: str | None) -> None:
    """Audit entries, newest first."""
    page = call("GET", "/v1/audit", tenant=tenant, actor=actor, action=action, since=since, limit=limit,
                cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], AUDIT_COLUMNS, "no entries"), page_footer(p)))


COMMANDS = (reconcile, overview, audit)
