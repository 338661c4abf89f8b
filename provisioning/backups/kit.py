"""What backup and restore steps are handed: the store BACKUP_STORE_URL names and the tenants'
keys (wrapped by KMS_KEY_ID, the local master key file, or with BACKUP_KMS_KEY_PER_TENANT each
tenant's own KMS key), built once per worker from its config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from provisioning.backups.keys import TenantKeys, keyring_from_settings
from provisioning.backups.objects import BackupStore
from provisioning.backups.store import open_store
from provisioning.config import WorkerConfig


def store_url(configured: str | None) -> str:
    """BACKUP_STORE_URL, or the folder `make run` uses: ./.data/backups under the working directory."""
    return configured or (Path.cwd() / ".data" / "backups").as_uri()


def store_kind(configured: str | None) -> str:
    """"file" or "s3", as the catalog records where a backup is (no store is opened for it)."""
    return "s3" if store_url(configured).startswith("s3://") else "file"


@dataclass(frozen=True)
class BackupKit:
    store: BackupStore
    keys: TenantKeys


def open_kit(config: WorkerConfig, catalog: asyncpg.Pool) -> BackupKit:
    keyring = keyring_from_settings(kms_key_id=config.kms_key_id,
                                    master_key_file=Path(config.backup_master_key_file),
                                    kms_key_per_tenant=config.backup_kms_key_per_tenant,
                                    kms_deletion_window_days=config.backup_kms_deletion_window_days,
                                    pause_at=config.pause_before_step)
    return BackupKit(store=open_store(store_url(config.backup_store_url)), keys=TenantKeys(catalog, keyring))


def object_key(tenant_id: object, backup_id: object) -> str:
    return f"tenants/{tenant_id}/backups/{backup_id}.tpbk"
