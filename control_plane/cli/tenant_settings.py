"""The rest of a tenant's admin surface over the API: its plan, members, custom domains, feature
overrides and erasure (`tenantctl tenants plan|members|member-set|member-remove|domains|domain-add|
domain-verify|domain-remove|features|feature-set|feature-clear|erase|erasure`), and `tenantctl plans set|delete`,
`tenantctl users create`."""

from __future__ import annotations

import click

from control_plane.cli.access import plans, users
from control_plane.cli.client import segment
from control_plane.cli.output import api_command, call, emit, fields, table
from control_plane.cli.tenants import show_erasure as _report
from control_plane.cli.tenants import tenants

ROLES = click.Choice(["owner", "admin", "member", "viewer"])
MEMBER_COLUMNS = [("USER", "user_id"), ("EMAIL", "email"), ("ROLE", "role")]
DOMAIN_COLUMNS = [("DOMAIN", "domain"), ("STATUS", "status"), ("CREATED", "created_at")]


def _tenant(key: str) -> str:
    return f"/v1/tenants/{segment(key)}"


def _done(what: str):
    return lambda _: click.echo(what)


@api_command(tenants, "plan")
@click.argument("tenant")
@click.argument("plan", required=False)
def set_plan(as_json: bool, tenant: str, plan: str | None) -> None:
    """Put TENANT on PLAN (no PLAN: on none). A plan with a tier moves the tenant there."""
    emit(call("PUT", f"{_tenant(tenant)}/plan", {"plan": plan}), as_json,
         lambda t: click.echo(f"{t['slug']}: plan {t['plan'] or '-'}"))


@api_command(tenants, "members")
@click.argument("tenant")
def members(as_json: bool, tenant: str) -> None:
    """TENANT's members and their roles."""
    emit(call("GET", f"{_tenant(tenant)}/memberships"), as_json,
         lambda d: table(d["items"], MEMBER_COLUMNS, "no members"))


@api_command(tenants, "member-set")
@click.argument("tenant")
@click.argument("user_id")
@click.argument("role", type=ROLES)
def member_set(as_json: bool, tenant: str, user_id: str, role: str) -> None:
    """Add user USER_ID to TENANT with ROLE, or change their role."""
    emit(call("PUT", f"{_tenant(tenant)}/memberships/{segment(user_id)}", {"role": role}), as_json, fields)


@api_command(tenants, "member-remove")
@click.argument("tenant")
@click.argument("user_id")
def member_remove(as_json: bool, tenant: str, user_id: str) -> None:
    """Remove user USER_ID from TENANT."""
    emit(call("DELETE", f"{_tenant(tenant)}/memberships/{segment(user_id)}") or {}, as_json, _done("removed"))


@api_command(tenants, "domains")
@click.argument("tenant")
def domains(as_json: bool, tenant: str) -> None:
    """TENANT's custom domains."""
    emit(call("GET", f"{_tenant(tenant)}/domains"), as_json, lambda d: table(d["items"], DOMAIN_COLUMNS, "no domains"))


@api_command(tenants, "domain-add")
@click.argument("tenant")
@click.argument("domain")
def domain_add(as_json: bool, tenant: str, domain: str) -> None:
    """Route DOMAIN to TENANT. With DOMAIN_VERIFICATION=dns it is pending: create the TXT record it
    prints, then `domain-verify`; with `off` it routes at once (check ownership yourself)."""
    emit(call("POST", f"{_tenant(tenant)}/domains", {"domain": domain}), as_json, _domain)


def _domain(d: dict) -> None:
    challenge = d.get("challenge")
    if d.get("status") != "pending" or not challenge:
        fields(d)
        return
    click.echo(f"{d['domain']}: pending; create this DNS record, then run `tenantctl tenants domain-verify`:")
    click.echo(f"  {challenge['name']}  {challenge['type']}  \"{challenge['value']}\"")


@api_command(tenants, "domain-verify")
@click.argument("tenant")
@click.argument("domain")
def domain_verify(as_json: bool, tenant: str, domain: str) -> None:
    """Check DOMAIN's TXT challenge now; once found, DOMAIN routes to TENANT."""
    emit(call("POST", f"{_tenant(tenant)}/domains/{segment(domain)}/verify"), as_json, fields)


@api_command(tenants, "domain-remove")
@click.argument("tenant")
@click.argument("domain")
def domain_remove(as_json: bool, tenant: str, domain: str) -> None:
    """Stop routing DOMAIN to TENANT."""
    emit(call("DELETE", f"{_tenant(tenant)}/domains/{segment(domain)}") or {}, as_json, _done("removed"))


@api_command(tenants, "features")
@click.argument("tenant")
def features(as_json: bool, tenant: str) -> None:
    """TENANT's effective features: its plan's, with the overrides applied."""
    emit(call("GET", f"{_tenant(tenant)}/features"), as_json,
         lambda d: fields(d, ["plan", "plan_features", "overrides", "features"]))


@api_command(tenants, "feature-set")
@click.argument("tenant")
@click.argument("feature")
@click.option("--on/--off", "enabled", default=True, show_default=True)
def feature_set(as_json: bool, tenant: str, feature: str, enabled: bool) -> None:
    """Override FEATURE for TENANT (wins over the plan)."""
    emit(call("PUT", f"{_tenant(tenant)}/features/{segment(feature)}", {"enabled": enabled}), as_json,
         lambda d: fields(d, ["plan", "features"]))


@api_command(tenants, "feature-clear")
@click.argument("tenant")
@click.argument("feature")
def feature_clear(as_json: bool, tenant: str, feature: str) -> None:
    """Drop TENANT's override of FEATURE (the plan decides again)."""
    emit(call("DELETE", f"{_tenant(tenant)}/features/{segment(feature)}") or {}, as_json, _done("cleared"))


@api_command(tenants, "erase")
@click.argument("tenant")
@click.option("--yes", is_flag=True, help="do not ask: the backups, keys and personal data go for good")
def erase(as_json: bool, tenant: str, yes: bool) -> None:
    """Erase deleted TENANT everywhere (backups, keys, Redis, personal data); prints the report."""
    if not yes:
        click.confirm(f"erase {tenant} for good?", abort=True)
    emit(call("POST", f"{_tenant(tenant)}/erasure"), as_json, _report)


@api_command(tenants, "erasure")
@click.argument("tenant")
def erasure(as_json: bool, tenant: str) -> None:
    """TENANT's erasure report."""
    emit(call("GET", f"{_tenant(tenant)}/erasure"), as_json, _report)


@api_command(plans, "set")
@click.argument("name")
@click.option("--description", default="")
@click.option("--feature", "features", multiple=True, help="a feature of the plan (repeat)")
@click.option("--rate-limit", type=int, default=None, help="requests per minute per tenant (default: unlimited)")
@click.option("--tier", type=click.Choice(["dedicated", "schema", "shared"]), default=None,
              help="tenants put on the plan move to this tier")
def set_plan_definition(as_json: bool, name: str, description: str, features: tuple[str, ...], rate_limit: int | None,
                        tier: str | None) -> None:
    """Create or replace plan NAME (fields not given take their defaults: a replace, not a patch)."""
    body = {"description": description, "features": list(features), "rate_limit_per_minute": rate_limit,
            **({"tier": tier} if tier else {})}
    emit(call("PUT", f"/v1/plans/{segment(name)}", body), as_json, fields)


@api_command(plans, "delete")
@click.argument("name")
def delete_plan(as_json: bool, name: str) -> None:
    """Delete plan NAME (refused while live tenants are on it)."""
    emit(call("DELETE", f"/v1/plans/{segment(name)}") or {}, as_json, _done("deleted"))


@api_command(users, "create")
@click.argument("email")
@click.option("--name", default=None)
def create_user(as_json: bool, email: str, name: str | None) -> None:
    """Create the user EMAIL (prints their id, for member-set)."""
    emit(call("POST", "/v1/users", {"email": email, **({"name": name} if name else {})}), as_json, fields)


