"""What a router is given instead of the control plane's secrets: `tenantctl router-key` (ROUTER_KEY)
and `tenantctl catalog-reader` (a read-only catalog login for CATALOG_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import click

from control_plane.cli.common import load_settings


@click.command("router-key")
def router_key() -> None:
    """Print ROUTER_KEY for routers: derives tenant role passwords and signs bindings, cannot
    unseal server passwords. Reads SECRET_KEY (and the other control-plane settings)."""
    from contracts.router_key import RouterKeys

    click.echo(RouterKeys.from_secret_key(load_settings().secret_key).encode())


@click.command("catalog-reader")
@click.option("--role", default="tp_catalog_reader", show_default=True, help="the login role to make or update")
def catalog_reader(role: str) -> None:
    """Make (or update) the read-only catalog login routers use and print its URL, to be set as the
    routers' CATALOG_DATABASE_URL. A new password each run: older router URLs stop working. Reads
    CATALOG_DATABASE_URL (a login that may create roles) and the other control-plane settings."""
    from contracts.identifiers import InvalidIdentifier, validate

    try:
        validate(role)
    except InvalidIdentifier:
        raise click.BadParameter("a role name is lowercase letters, digits and _", param_hint="--role") from None
    settings = load_settings()
    password = secrets.token_urlsafe(32)
    asyncio.run(_make_reader(settings.catalog_database_url, role, password))
    click.echo(_with_login(settings.catalog_database_url, role, password))


async def _make_reader(catalog_url: str, role: str, password: str) -> None:
    import asyncpg

    from control_plane.catalog.reader import ensure_reader
    from provisioning import scram

    conn = await asyncpg.connect(_asyncpg_url(catalog_url))
    try:
        await ensure_reader(conn, role, scram.verifier(password))
    finally:
        await conn.close()


def _asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_login(url: str, role: str, password: str) -> str:
    parts = urlsplit(_asyncpg_url(url))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


COMMANDS = (router_key, catalog_reader)
