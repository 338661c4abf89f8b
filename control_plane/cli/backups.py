"""`tenantctl backup create|list|restore|verify|export`: the backup use cases on a catalog engine
of their own, as the admin API runs them (audited as `cli`); `export` writes a backup's decrypted
payload to a file: a pg_dump custom-format archive that the stock `pg_restore` restores without
this product (dedicated and schema tiers), or the shared tier's archive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from control_plane.cli.common import load_settings


def _run(use: Callable[[Any], Awaitable[Any]]) -> Any:
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.errors import ControlPlaneError
    from control_plane.services.backups import BackupService

    settings = load_settings()

    async def main() -> Any:
        engine = create_engine(settings.catalog_database_url, pool_size=1)
        try:
            return await use(BackupService(sessionmaker(engine), store_url=settings.backup_store_url,
                                           kms_key_id=settings.kms_key_id,
                                           master_key_file=settings.backup_master_key_file))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None


def _echo(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


@click.group()
def backup() -> None:
    """Per-tenant backups: take, list, restore, verify, export."""


@backup.command()
@click.argument("tenant")
@click.option("--label", default=None)
def create(tenant: str, label: str | None) -> None:
    """Back TENANT (id or slug) up; prints the backup and its operation id."""
    from control_plane.schemas import CreateBackup

    _echo(_run(lambda s: s.create("cli", tenant, CreateBackup(label=label))))


@backup.command("list")
@click.argument("tenant")
def list_backups(tenant: str) -> None:
    """TENANT's backups, newest first, one JSON object a line."""
    for item in _run(lambda s: s.list_for_tenant(tenant)).items:
        _echo(item)


@backup.command()
@click.argument("tenant")
@click.argument("backup_id", type=click.UUID)
def restore(tenant: str, backup_id: uuid.UUID) -> None:
    """Restore TENANT in place from BACKUP_ID."""
    from control_plane.schemas import RestoreTenant

    _echo(_run(lambda s: s.restore("cli", tenant, RestoreTenant(backup_id=backup_id))))


@backup.command()
@click.argument("backup_id")
def verify(backup_id: str) -> None:
    """A restore drill of BACKUP_ID into a scratch database."""
    _echo(_run(lambda s: s.verify("cli", backup_id)))


@backup.command()
@click.argument("backup_id")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export(backup_id: str, out: Path) -> None:
    """Write BACKUP_ID's decrypted payload to OUT (digest and authenticity checked on the way; a
    failure removes the partial file)."""
    size = _run(lambda s: s.export(backup_id, out))
    click.echo(f"wrote {size} bytes to {out}")


COMMANDS = [backup]
