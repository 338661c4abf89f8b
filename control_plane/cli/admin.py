"""Admin commands: register a database server, migrate the fleet, reconcile the catalog."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

import click

from control_plane.cli.common import load_settings

if TYPE_CHECKING:
    from control_plane.schemas import ServerOut
    from control_plane.settings import Settings


@click.command("register-server")
@click.option("--name", required=True)
@click.option("--dsn", required=True, help="admin DSN: postgresql://user:password@host:port/db")
@click.option("--capacity-databases", default=500, show_default=True)
@click.option("--capacity-connections", default=100, show_default=True)
@click.option("--replace", is_flag=True, help="update the server if the name is taken")
def register_server(name: str, dsn: str, capacity_databases: int, capacity_connections: int, replace: bool) -> None:
    """Register a database server tenants can be placed on."""
    from control_plane.errors import ControlPlaneError

    try:
        out = asyncio.run(register(load_settings(), name, dsn, capacity_databases, capacity_connections, replace))
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None
    click.echo(f"registered {out.name} ({out.dsn})")


async def register(settings: Settings, name: str, dsn: str, capacity_databases: int,
                   capacity_connections: int, replace: bool) -> ServerOut:
    """Register a server on a catalog engine of its own (one connection, disposed after)."""
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.schemas import RegisterServer
    from control_plane.services.servers import ServerService
    from provisioning.sealing import SecretBox

    engine = create_engine(settings.catalog_database_url, pool_size=1)
    try:
        service = ServerService(sessionmaker(engine), SecretBox(settings.secret_key))
        body = RegisterServer(name=name, dsn=dsn, capacity_databases=capacity_databases,
                              capacity_connections=capacity_connections)
        return await service.register("cli", body, replace=replace)
    finally:
        await engine.dispose()


@click.command()
@click.option("--to", "target", default="head", show_default=True, help="target tenant revision")
@click.option("--tenant", "tenants", multiple=True, help="a tenant id or slug (repeat); default: every tenant")
@click.option("--canary", default=5, show_default=True, help="tenants in the canary wave")
@click.option("--wave-size", default=50, show_default=True)
@click.option("--halt-on-error", is_flag=True, help="stop after a wave in which a tenant failed")
@click.option("--no-wait", is_flag=True, help="start the run and print its id")
def migrate(target: str, tenants: tuple[str, ...], canary: int, wave_size: int, halt_on_error: bool,
            no_wait: bool) -> None:
    """Migrate the fleet (workers do the work; this follows progress and prints a report)."""
    import msgspec

    from control_plane.errors import ControlPlaneError
    from control_plane.schemas import StartMigration
    from control_plane.services.migrations import MigrationService

    s = load_settings()
    service = MigrationService(s.catalog_database_url)
    try:
        body = msgspec.convert({"target": target, "tenants": list(tenants) or None, "canary": canary,
                                "wave_size": wave_size, "halt_on_error": halt_on_error}, StartMigration)
        run = asyncio.run(service.start("cli", body))
    except (ControlPlaneError, msgspec.ValidationError) as exc:
        raise click.ClickException(getattr(exc, "detail", str(exc))) from None
    click.echo(f"migration run {run.id}: {len(run.tenants)} tenant(s) to {run.target_revision}")
    if no_wait:
        return
    total = len(run.tenants)
    with click.progressbar(length=total, label="migrating", show_pos=True) as bar:
        done = 0
        while True:
            run = asyncio.run(service.get(str(run.id)))
            now_done = sum(run.counts[k] for k in ("succeeded", "failed", "skipped"))
            bar.update(now_done - done)
            done = now_done
            if run.state != "running":
                break
            time.sleep(0.5)
    for t in run.tenants:
        click.echo(f"{t.slug:40} wave {t.wave:<3} {t.state:10} {t.from_revision or '-':>8} -> "
                   f"{t.to_revision or '-':8} {t.error or ''}")
    click.echo(f"{run.state}: " + ", ".join(f"{k} {v}" for k, v in run.counts.items() if v))
    if run.state != "succeeded":
        sys.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def reconcile(as_json: bool) -> None:
    """Compare the catalog with every server and report drift and orphans (drops nothing)."""
    import msgspec

    from control_plane.services.reconciliation import ReconciliationService
    from provisioning.sealing import SecretBox

    s = load_settings()
    report = asyncio.run(ReconciliationService(s.catalog_database_url, SecretBox(s.secret_key)).run())
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    click.echo(f"servers checked: {', '.join(report.servers_checked) or 'none'}")
    if report.unreachable:
        click.echo(f"unreachable: {', '.join(report.unreachable)}")
    for f in report.findings:
        click.echo(f"{f.kind:18} {f.server:16} {f.object:44} {f.tenant_id or '-':36} {f.detail}")
    click.echo(f"{len(report.findings)} finding(s)")
    if report.spares:
        click.echo(f"{len(report.spares)} spare database(s), not counted as findings")


COMMANDS = (register_server, migrate, reconcile)
