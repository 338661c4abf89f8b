"""`tenantctl servers register|list|cordon|uncordon|drain`, and `tenantctl register-server`, over
the admin API. `register-server --replace` (updating a registered server: no API route does) is the
one path here that opens the catalog itself."""

from __future__ import annotations

import asyncio

import click

from control_plane.cli.client import segment
from control_plane.cli.output import api_command, call, emit, table

SERVER_COLUMNS = [("NAME", "name"), ("STATUS", "status"), ("HOST", "host"), ("PORT", "port"),
                  ("TENANTS", "tenant_count"), ("CAPACITY", "capacity_databases"),
                  ("CONNECTIONS", "capacity_connections")]


@click.group()
def servers() -> None:
    """Database servers: register, list, cordon, uncordon, drain."""


def _registered(server: dict) -> None:
    click.echo(f"registered {server['name']} ({server['dsn']})")


def _register_options(fn):
    for option in reversed([
        click.option("--name", required=True),
        click.option("--dsn", required=True, help="admin DSN: postgresql://user:password@host:port/db"),
        click.option("--capacity-databases", default=500, show_default=True),
        click.option("--capacity-connections", default=100, show_default=True),
    ]):
        fn = option(fn)
    return fn


def _register(name: str, dsn: str, capacity_databases: int, capacity_connections: int) -> dict:
    return call("POST", "/v1/database-servers", {"name": name, "dsn": dsn, "capacity_databases": capacity_databases,
                                                 "capacity_connections": capacity_connections})


@api_command(servers)
@_register_options
def register(as_json: bool, name: str, dsn: str, capacity_databases: int, capacity_connections: int) -> None:
    """Register a database server tenants can be placed on."""
    emit(_register(name, dsn, capacity_databases, capacity_connections), as_json, _registered)


@api_command(servers, "list")
def list_servers(as_json: bool) -> None:
    """Database servers with their fill."""
    emit(call("GET", "/v1/database-servers"), as_json, lambda d: table(d["items"], SERVER_COLUMNS, "no servers"))


def _status_change(action: str):
    @api_command(servers, action)
    @click.argument("name")
    def command(as_json: bool, name: str) -> None:
        server = call("POST", f"/v1/database-servers/{segment(name)}/{action}")
        emit(server, as_json, lambda s: click.echo(f"{s['name']}: {s['status']}"))
    return command


cordon = _status_change("cordon")
cordon.help = "Place no new tenants on server NAME."
uncordon = _status_change("uncordon")
uncordon.help = "Place new tenants on server NAME again."


@api_command(servers)
@click.argument("name")
def drain(as_json: bool, name: str) -> None:
    """Cordon server NAME and move its tenants away (one operation each; `operations wait` follows them)."""
    result = call("POST", f"/v1/database-servers/{segment(name)}/drain")

    def human(r: dict) -> None:
        click.echo(f"{r['server']}: {r['status']}, {len(r['operation_ids'])} move(s)")
        for op in r["operation_ids"]:
            click.echo(f"  operation {op}")
    emit(result, as_json, human)


@api_command(None, "register-server", epilog=(
    "--replace updates a registered server, which no API route does: it opens the catalog itself "
    "and reads CATALOG_DATABASE_URL and SECRET_KEY (not the API's variables)."))
@_register_options
@click.option("--replace", is_flag=True, help="update the server if the name is taken (direct catalog access)")
def register_server(as_json: bool, name: str, dsn: str, capacity_databases: int, capacity_connections: int,
                    replace: bool) -> None:
    """Register a database server tenants can be placed on (as `servers register`)."""
    if not replace:
        emit(_register(name, dsn, capacity_databases, capacity_connections), as_json, _registered)
        return
    import msgspec

    from control_plane.cli.admin import register as register_direct
    from control_plane.cli.common import load_settings
    from control_plane.errors import ControlPlaneError

    try:
        out = asyncio.run(register_direct(load_settings(), name, dsn, capacity_databases, capacity_connections,
                                          replace=True))
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None
    emit(msgspec.to_builtins(out), as_json, _registered)


COMMANDS = (servers, register_server)
