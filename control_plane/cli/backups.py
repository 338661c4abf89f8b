"""`tenantctl backup create|list|restore|verify|export` and `backup keys rewrap`.

create, list, restore, verify and keys rewrap go through the admin API (audited as the key's owner). `export`
opens the catalog and the backup store itself: it writes a backup's decrypted payload to a local
file (a pg_dump custom-format archive that the stock `pg_restore` restores without this product, or
the shared tier's archive), and no API route hands out decrypted data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from control_plane.cli.client import Api, ApiError, segment
from control_plane.cli.common import load_settings
from control_plane.cli.operations import accepted, wait_options
from control_plane.cli.output import api_command, call, emit, table

BACKUP_COLUMNS = [("ID", "id"), ("STATE", "state"), ("TRIGGER", "trigger"), ("LABEL", "label"),
                  ("SIZE", "size_bytes"), ("REVISION", "revision"), ("CREATED", "created_at"),
                  ("VERIFIED", "verified_at")]


@click.group()
def backup() -> None:
    """Per-tenant backups: take, list, restore, verify, export."""


@api_command(backup)
@click.argument("tenant")
@click.option("--label", default=None)
@wait_options
def create(as_json: bool, tenant: str, label: str | None, wait_: bool, timeout: float) -> None:
    """Back TENANT (id or slug) up; prints the backup and its operation id."""
    answer = call("POST", f"/v1/tenants/{segment(tenant)}/backups", {"label": label})
    accepted(answer, as_json, timeout if wait_ else None,
             lambda a: click.echo(f"backup {a['backup']['id']} {a['backup']['state']}, operation {a['operation_id']}"))


@api_command(backup, "list")
@click.argument("tenant")
def list_backups(as_json: bool, tenant: str) -> None:
    """TENANT's backups, newest first."""
    emit(call("GET", f"/v1/tenants/{segment(tenant)}/backups"), as_json,
         lambda d: table(d["items"], BACKUP_COLUMNS, "no backups"))


@api_command(backup)
@click.argument("tenant")
@click.argument("backup_id", type=click.UUID)
@click.option("--tier", type=click.Choice(["dedicated", "schema", "shared"]), default=None,
              help="a deleted tenant only: the tier it comes back on (default: the one it was on)")
@wait_options
def restore(as_json: bool, tenant: str, backup_id, tier: str | None, wait_: bool, timeout: float) -> None:
    """Restore TENANT in place from BACKUP_ID; a deleted TENANT (by id) comes back under its id."""
    body = {"backup_id": str(backup_id)} | ({"tier": tier} if tier else {})
    answer = call("POST", f"/v1/tenants/{segment(tenant)}/restore", body)
    accepted(answer, as_json, timeout if wait_ else None,
             lambda a: click.echo(f"restoring {a['tenant_id']} from {a['backup_id']}, operation {a['operation_id']}"))


@api_command(backup)
@click.argument("backup_id")
@wait_options
def verify(as_json: bool, backup_id: str, wait_: bool, timeout: float) -> None:
    """A restore drill of BACKUP_ID into a scratch database."""
    answer = call("POST", f"/v1/backups/{segment(backup_id)}/verify")
    accepted(answer, as_json, timeout if wait_ else None,
             lambda a: click.echo(f"verifying {a['backup']['id']}, operation {a['operation_id']}"))


@backup.group()
def keys() -> None:
    """A tenant's backup data keys."""


# `rewrap --all`: a tenant with nothing to move, or busy, is skipped; one the API failed (say, its key's
# wrapper not configured) is listed and the run goes on, ending with exit status 1; no answer stops it
_SKIPPED = ("backup_keys_destroyed", "operation_in_progress")
_NO_ANSWER = ("unreachable", "timeout")


@api_command(keys)
@click.argument("tenant", required=False)
@click.option("--all", "every", is_flag=True, help="every tenant (deleted ones too: their backups are kept)")
def rewrap(as_json: bool, tenant: str | None, every: bool) -> None:
    """Move TENANT's data-key versions under the current wrapper: its own KMS key with
    BACKUP_KMS_KEY_PER_TENANT, else KMS_KEY_ID or the local master key (as the API is configured).
    Safe to rerun; with --all, one audited call per tenant: tenants with destroyed keys or an open
    operation are skipped, failures listed (exit status 1)."""
    if every == (tenant is not None):
        raise click.UsageError("give a TENANT or --all, not both")
    if tenant is not None:
        emit(call("POST", f"/v1/tenants/{segment(tenant)}/keys/rewrap"), as_json,
             lambda a: click.echo(f"{a['tenant_id']}: {a['rewrapped_versions']} version(s) rewrapped, "
                                  f"now under {a['wrapper_kind']}" + (f" {a['kms_key_id']}" if a["kms_key_id"] else "")))
        return
    moved, skipped, failed = [], [], []
    with Api.from_env() as api:
        cursor = None
        while True:
            page = api.get("/v1/tenants", limit=500, cursor=cursor)
            for item in page["items"]:
                try:
                    moved.append(api.post(f"/v1/tenants/{item['id']}/keys/rewrap"))
                except ApiError as exc:
                    if exc.code in _NO_ANSWER:
                        raise
                    (skipped if exc.code in _SKIPPED else failed).append(
                        {"tenant_id": item["id"], "code": exc.code, "detail": exc.detail})
            cursor = page["next_cursor"]
            if cursor is None:
                break
    summary = {"tenants": len(moved), "rewrapped_versions": sum(a["rewrapped_versions"] for a in moved),
               "skipped": skipped, "failed": failed}
    emit(summary, as_json, lambda d: click.echo(
        f"{d['rewrapped_versions']} version(s) rewrapped over {d['tenants']} tenant(s); "
        f"{len(d['skipped'])} skipped, {len(d['failed'])} failed"
        + "".join(f"\n  {x['tenant_id']}: {x['code']}" for x in d["skipped"] + d["failed"])))
    if failed:
        raise SystemExit(1)


@backup.command(epilog="Reads CATALOG_DATABASE_URL, SECRET_KEY, BACKUP_STORE_URL and BACKUP_MASTER_KEY_FILE or "
                       "KMS_KEY_ID: it decrypts here, not in the API.")
@click.argument("backup_id")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export(backup_id: str, out: Path) -> None:
    """Write BACKUP_ID's decrypted payload to OUT (digest and authenticity checked on the way; a
    failure removes the partial file)."""
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.errors import ControlPlaneError
    from control_plane.services.backups import BackupService

    settings = load_settings()

    async def main() -> int:
        engine = create_engine(settings.catalog_database_url, pool_size=1)
        try:
            service = BackupService(sessionmaker(engine), settings.tenant_tree, store_url=settings.backup_store_url,
                                    kms_key_id=settings.kms_key_id, master_key_file=settings.backup_master_key_file,
                                    kms_key_per_tenant=settings.backup_kms_key_per_tenant,
                                    kms_deletion_window_days=settings.backup_kms_deletion_window_days)
            return await service.export(backup_id, out)
        finally:
            await engine.dispose()

    try:
        size = asyncio.run(main())
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None
    click.echo(f"wrote {size} bytes to {out}")


COMMANDS = [backup]
