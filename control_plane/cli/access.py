"""`tenantctl plans list|show`, `tenantctl users list`, `tenantctl keys create|list|revoke` over the
admin API."""

from __future__ import annotations

import click

from control_plane.cli.client import segment
from control_plane.cli.output import api_command, call, emit, fields, page_footer, table

PLAN_COLUMNS = [("NAME", "name"), ("TIER", "tier"), ("TENANTS", "tenant_count"),
                ("RATE/MIN", "rate_limit_per_minute"), ("FEATURES", "features"), ("DESCRIPTION", "description")]
USER_COLUMNS = [("EMAIL", "email"), ("NAME", "name"), ("ID", "id"), ("CREATED", "created_at")]
KEY_COLUMNS = [("NAME", "name"), ("SCOPES", "scopes"), ("CREATED", "created_at"), ("BY", "created_by"),
               ("EXPIRES", "expires_at"), ("REVOKED", "revoked_at")]
SCOPES = click.Choice(["tenants:read", "tenants:write", "billing", "servers", "admin"])


@click.group()
def plans() -> None:
    """Plans (features, rate limits, tiers): list, show, set, delete."""


@api_command(plans, "list")
def list_plans(as_json: bool) -> None:
    """Every plan with its tenant count."""
    emit(call("GET", "/v1/plans"), as_json, lambda d: table(d["items"], PLAN_COLUMNS, "no plans"))


@api_command(plans)
@click.argument("name")
def show(as_json: bool, name: str) -> None:
    """Plan NAME."""
    emit(call("GET", f"/v1/plans/{segment(name)}"), as_json, fields)


@click.group()
def users() -> None:
    """Users (tenant members): list, create."""


@api_command(users, "list")
@click.option("--email", default=None, help="only addresses starting with this")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page (printed under the previous one)")
def list_users(as_json: bool, email: str | None, limit: int, cursor: str | None) -> None:
    """Users, newest first."""
    page = call("GET", "/v1/users", email=email, limit=limit, cursor=cursor)
    emit(page, as_json, lambda p: (table(p["items"], USER_COLUMNS, "no users"), page_footer(p)))


@click.group()
def keys() -> None:
    """Admin API keys: create (the token is shown once), list, revoke. Needs an `admin` key."""


@api_command(keys)
@click.argument("name")
@click.option("--scope", "scopes", type=SCOPES, multiple=True, required=True, help="a scope (repeat)")
@click.option("--expires-at", default=None, help="RFC 3339 time after which the key is refused")
def create(as_json: bool, name: str, scopes: tuple[str, ...], expires_at: str | None) -> None:
    """Create admin key NAME; prints its token once (only its digest is kept)."""
    body = {"name": name, "scopes": list(scopes), **({"expires_at": expires_at} if expires_at else {})}

    def human(d: dict) -> None:
        click.echo(f"created key {d['key']['name']} ({', '.join(d['key']['scopes'])})")
        click.echo(f"token (shown once): {d['token']}")
    emit(call("POST", "/v1/admin-keys", body), as_json, human)


@api_command(keys, "list")
def list_keys(as_json: bool) -> None:
    """Admin keys (never their tokens)."""
    emit(call("GET", "/v1/admin-keys"), as_json, lambda d: table(d["items"], KEY_COLUMNS, "no keys"))


@api_command(keys)
@click.argument("name")
def revoke(as_json: bool, name: str) -> None:
    """Revoke admin key NAME: its token is refused from now on."""
    emit(call("POST", f"/v1/admin-keys/{segment(name)}/revoke"), as_json,
         lambda k: click.echo(f"revoked {k['name']} at {k['revoked_at']}"))


COMMANDS = (plans, users, keys)
