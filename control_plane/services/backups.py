"""Backup use cases: each write is one catalog transaction (backup row or check + queued
operation + audit row); the worker does the rest (provisioning/backing_up.py, restores.py,
revivals.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import Backup, Tenant
from control_plane.schemas import (
    BackupAccepted,
    BackupList,
    BackupOut,
    CreateBackup,
    DestroyKeys,
    KeysDestroyed,
    KeysRewrapped,
    KeysRotated,
    KeyVersionOut,
    RestoreAccepted,
    RestoreTenant,
    TableFiguresOut,
)
from control_plane.services import audit, revivals
from control_plane.services.tenants import TenantService
from migrations.tree import TenantTree
from provisioning import queue
from provisioning.backups.crypto import decrypt
from provisioning.backups.keys import KeyDestroyed, Keyring, KeyUnavailable, TenantKeys, keyring_from_settings
from provisioning.backups.kit import store_kind, store_url
from provisioning.backups.store import open_store


def _to_out(b: Backup) -> BackupOut:
    tables = [TableFiguresOut(name=t["name"], rows=t["rows"], checksum=t["checksum"], method=t["method"])
              for t in (b.manifest or {}).get("tables", [])]
    return BackupOut(id=b.id, tenant_id=b.tenant_id, tier=b.tier, revision=b.revision, state=b.state,
                     trigger=b.trigger, label=b.label, size_bytes=b.size_bytes, store=b.store,
                     key_version=b.key_version, tables=tables, operation_id=b.operation_id, error=b.error,
                     created_at=b.created_at, finished_at=b.finished_at, verified_at=b.verified_at,
                     drill_result=b.drill_result)


def _backup_id(key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(key)
    except ValueError:
        return None


class BackupService:
    def __init__(self, sessions: async_sessionmaker, tenant_tree: TenantTree, *, store_url: str | None,
                 kms_key_id: str | None, master_key_file: str, kms_key_per_tenant: bool = False,
                 kms_deletion_window_days: int = 30) -> None:
        self.sessions = sessions
        self._newest = tenant_tree.head()  # a newer backup than the process's tenant tree does not restore
        self._tenants = TenantService(sessions, tenant_tree)
        self._store_url, self._store_kind = store_url, store_kind(store_url)
        self._kms_key_id, self._master_key_file = kms_key_id, master_key_file
        self._kms = {"kms_key_per_tenant": kms_key_per_tenant, "kms_deletion_window_days": kms_deletion_window_days}
        self._keyring: Keyring | None = None

    def keyring(self) -> Keyring:
        """Opened on first use: an API that never rotates a key needs no master key."""
        if self._keyring is None:
            self._keyring = keyring_from_settings(kms_key_id=self._kms_key_id, master_key_file=Path(self._master_key_file),
                                                  **self._kms)
        return self._keyring

    async def _ensure_tenant_kms_key(self, key: str) -> None:
        """With per-tenant KMS keys, the tenant's is made (or found) before the rotation's transaction,
        on a connection of its own that commits each statement: the record of a key that may exist
        must outlive a crash between CreateKey and CreateAlias (tenant_kms.py). A failure here is
        left to the rotation, which says what it means for the tenant."""
        if not self.keyring().per_tenant:
            return
        async with self.sessions() as session:
            conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})  # before any query
            tenant: Tenant = (await self._tenants._row(session, key))[0]
            versions = await TenantKeys(DriverSQL(conn), self.keyring()).versions(tenant.id)  # type: ignore[arg-type]
            if any(v["destroyed_at"] is not None for v in versions):
                return  # the rotation refuses (409): no KMS key is made for a tenant whose keys are gone
            try:
                await self.keyring().wrapper_for(DriverSQL(conn), tenant.id)
            except KeyUnavailable:
                pass

    async def _active_tenant(self, session: AsyncSession, key: str) -> Tenant:
        tenant: Tenant = (await self._tenants._row(session, key, lock=True))[0]
        await self._tenants._refuse_if_busy(session, tenant.id)
        if tenant.status != TenantStatus.active.value:
            raise errors.InvalidTransition(f"only an active tenant can be backed up or restored; this one is "
                                           f"{tenant.status!r}", current=tenant.status)
        return tenant

    async def create(self, actor: str, key: str, body: CreateBackup) -> BackupAccepted:
        async with self.sessions() as session, session.begin():
            tenant = await self._active_tenant(session, key)
            operation_id = uuid.uuid4()
            backup = Backup(id=uuid.uuid4(), tenant_id=tenant.id, tier=tenant.tier, state="queued", trigger="manual",
                            label=body.label, store=self._store_kind, operation_id=operation_id, manifest={})
            session.add(backup)
            await session.flush()
            await queue.enqueue(DriverSQL(await session.connection()), "backup_tenant", queue.NewOperation(
                id=operation_id, tenant_id=tenant.id, params={"backup_id": str(backup.id)}))
            audit.record(session, actor, "backup.create", "tenant", tenant.id, backup_id=str(backup.id),
                         operation_id=str(operation_id))
            await session.refresh(backup)
            return BackupAccepted(backup=_to_out(backup), operation_id=operation_id)

    async def list_for_tenant(self, key: str) -> BackupList:
        async with self.sessions() as session:
            tenant: Tenant = (await self._tenants._row(session, key))[0]
            rows = (await session.scalars(select(Backup).where(Backup.tenant_id == tenant.id)
                                          .order_by(Backup.created_at.desc(), Backup.id.desc()))).all()
            return BackupList(items=[_to_out(b) for b in rows])

    async def get(self, key: str) -> BackupOut:
        backup_id = _backup_id(key)
        async with self.sessions() as session:
            backup = await session.get(Backup, backup_id) if backup_id is not None else None
            if backup is None:
                raise errors.BackupNotFound(f"no backup {key[:100]!r}")
            return _to_out(backup)

    async def restore(self, actor: str, key: str, body: RestoreTenant) -> RestoreAccepted:
        """In place for a live tenant; a deleted one is brought back under its id (revivals.py)."""
        async with self.sessions() as session, session.begin():
            found: Tenant = (await self._tenants._row(session, key, lock=True))[0]
            if found.status == TenantStatus.deleted.value:
                operation_id = await revivals.queue_revival(session, actor, found, body, self._newest)
                return RestoreAccepted(tenant_id=found.id, backup_id=body.backup_id, operation_id=operation_id)
            tenant = await self._active_tenant(session, key)
            if body.tier is not None and body.tier.value != tenant.tier:
                raise errors.BackupNotRestorable(f"a restore in place keeps the tenant on the {tenant.tier} tier; "
                                                 "move it afterwards")
            backup = await session.get(Backup, body.backup_id)
            if backup is None:
                raise errors.UnknownBackup(f"no backup {body.backup_id}")
            if backup.tenant_id != tenant.id:
                raise errors.BackupOfOtherTenant("the backup belongs to another tenant; a clone is a new tenant")
            if backup.state != "succeeded":
                raise errors.BackupNotRestorable(f"the backup is {backup.state}; only a succeeded one restores")
            if backup.tier != tenant.tier:
                raise errors.BackupNotRestorable(f"a {backup.tier}-tier backup does not restore in place on the "
                                                 f"{tenant.tier} tier; move the tenant back to the {backup.tier} "
                                                 f"tier first, or make a new tenant from it (\"from_backup\")")
            # revision ids are tNNNN, increasing: compared as text, as routers do
            if backup.revision is not None and backup.revision > self._newest:
                raise errors.BackupTooNew(f"the backup is at {backup.revision}; this code knows up to "
                                          f"{self._newest}")
            operation_id = uuid.uuid4()
            await queue.enqueue(DriverSQL(await session.connection()), "restore_tenant", queue.NewOperation(
                id=operation_id, tenant_id=tenant.id, params={"backup_id": str(backup.id)}))
            audit.record(session, actor, "tenant.restore", "tenant", tenant.id, backup_id=str(backup.id),
                         operation_id=str(operation_id))
            return RestoreAccepted(tenant_id=tenant.id, backup_id=backup.id, operation_id=operation_id)

    async def verify(self, actor: str, key: str) -> BackupAccepted:
        """Queue a restore drill of the backup (an operation of its tenant's)."""
        backup_id = _backup_id(key)
        async with self.sessions() as session, session.begin():
            backup = await session.get(Backup, backup_id, with_for_update=True) if backup_id is not None else None
            if backup is None:
                raise errors.BackupNotFound(f"no backup {key[:100]!r}")
            if backup.state != "succeeded":
                raise errors.BackupNotRestorable(f"the backup is {backup.state}; only a succeeded one can be verified")
            await self._tenants._refuse_if_busy(session, backup.tenant_id)
            operation_id = uuid.uuid4()
            await queue.enqueue(DriverSQL(await session.connection()), "verify_backup", queue.NewOperation(
                id=operation_id, tenant_id=backup.tenant_id, params={"backup_id": str(backup.id)}))
            audit.record(session, actor, "backup.verify", "backup", backup.id, operation_id=str(operation_id))
            return BackupAccepted(backup=_to_out(backup), operation_id=operation_id)

    async def export(self, key: str, out: Path) -> int:
        """The backup's payload, decrypted, into the file `out` (bytes written); a partial file is
        removed when the digest or the decryption fails."""
        backup_id = _backup_id(key)
        async with self.sessions() as session:
            backup = await session.get(Backup, backup_id) if backup_id is not None else None
            if backup is None or backup.object_key is None:
                raise errors.BackupNotFound(f"no backup {key[:100]!r} with an object")
            tenant_id, object_key = backup.tenant_id, backup.object_key
        store = open_store(store_url(self._store_url))
        size = 0
        try:
            async with self.sessions() as session:
                keys = TenantKeys(DriverSQL(await session.connection()), self.keyring())  # type: ignore[arg-type]
                with out.open("wb") as handle:
                    async for chunk in decrypt(store.read(object_key), keys.get, tenant_id=tenant_id,
                                               backup_id=backup_id):
                        handle.write(chunk)
                        size += len(chunk)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return size

    async def rotate_key(self, actor: str, key: str) -> KeysRotated:
        """A new data key version for new backups; old versions stay, so old backups stay readable."""
        await self._ensure_tenant_kms_key(key)
        async with self.sessions() as session, session.begin():
            tenant: Tenant = (await self._tenants._row(session, key, lock=True))[0]
            keys = TenantKeys(DriverSQL(await session.connection()), self.keyring())  # type: ignore[arg-type]
            try:
                rotated = await keys.rotate(tenant.id)
            except KeyDestroyed as exc:
                raise errors.BackupKeysDestroyed(str(exc)) from None
            except KeyUnavailable as exc:
                raise errors.KeyServiceUnavailable(str(exc)) from exc
            versions: list[dict[str, Any]] = await keys.versions(tenant.id)
            audit.record(session, actor, "tenant.keys.rotate", "tenant", tenant.id, version=rotated.version)
        return KeysRotated(tenant_id=tenant.id, current_version=rotated.version,
                           versions=[msgspec.convert(v, KeyVersionOut, from_attributes=True) for v in versions])

    async def rewrap_keys(self, actor: str, key: str) -> KeysRewrapped:
        """Every live data-key version of the tenant moved under its current wrapper (its own KMS key
        with BACKUP_KMS_KEY_PER_TENANT, else KMS_KEY_ID or the local master key); the data keys, and
        so the backups, stay as they are. A rerun moves nothing more (0). Refused for destroyed keys
        (409: nothing is left to move, and no KMS key is made for them) and while an operation of the
        tenant is open (an erasure could otherwise get a KMS key made after its KMS step)."""
        async with self.sessions() as session:
            conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})  # before any query
            tenant: Tenant = (await self._tenants._row(session, key))[0]
            live = await self._refuse_rewrap(session, TenantKeys(DriverSQL(conn), self.keyring()), tenant.id)  # type: ignore[arg-type]
            if live and self.keyring().per_tenant:
                # the tenant's KMS key made (or found) on a connection that commits each statement, as
                # for a rotation: the record of a key that may exist must outlive a crash (tenant_kms.py)
                try:
                    await self.keyring().wrapper_for(DriverSQL(conn), tenant.id)
                except KeyUnavailable as exc:
                    raise errors.KeyServiceUnavailable(str(exc)) from exc
        async with self.sessions() as session, session.begin():
            tenant = (await self._tenants._row(session, key, lock=True))[0]
            keys = TenantKeys(DriverSQL(await session.connection()), self.keyring())  # type: ignore[arg-type]
            await self._refuse_rewrap(session, keys, tenant.id)
            try:
                moved = await keys.rewrap(tenant.id)
            except KeyUnavailable as exc:
                raise errors.KeyServiceUnavailable(str(exc)) from exc
            versions: list[dict[str, Any]] = await keys.versions(tenant.id)
            kind = "kms_tenant" if self.keyring().per_tenant else self.keyring().current.kind
            kms_key_id = next((v["wrapper_key_id"] for v in versions if v["wrapper_kind"] == "kms_tenant"
                               and v["destroyed_at"] is None), None) if kind == "kms_tenant" else None
            audit.record(session, actor, "tenant.keys.rewrap", "tenant", tenant.id, versions=moved,
                         wrapper_kind=kind, kms_key_id=kms_key_id)
        return KeysRewrapped(tenant_id=tenant.id, rewrapped_versions=moved, wrapper_kind=kind, kms_key_id=kms_key_id,
                             versions=[msgspec.convert(v, KeyVersionOut, from_attributes=True) for v in versions])

    async def _refuse_rewrap(self, session: AsyncSession, keys: TenantKeys, tenant_id: uuid.UUID) -> bool:
        """409 for destroyed keys or an open operation; whether the tenant has live keys at all."""
        await self._tenants._refuse_if_busy(session, tenant_id)
        versions = await keys.versions(tenant_id)
        if any(v["destroyed_at"] is not None for v in versions):
            raise errors.BackupKeysDestroyed(f"the backup keys of tenant {tenant_id} were destroyed; "
                                             "there is nothing to rewrap")
        return bool(versions)

    async def destroy_keys(self, actor: str, key: str, body: DestroyKeys) -> KeysDestroyed:
        """Crypto-shredding: every data key of the tenant is erased, so none of its backups can be
        read again, and no new one can be taken. Refused while an operation of the tenant is open
        (a backup or restore holding a key would outlive the call). The tenant's own KMS key, if it
        has one, is scheduled for deletion in the same transaction: if KMS fails, nothing is destroyed
        (503), and a repeated call finds the date KMS recorded."""
        async with self.sessions() as session, session.begin():
            tenant: Tenant = (await self._tenants._row(session, key, lock=True))[0]
            await self._tenants._refuse_if_busy(session, tenant.id)
            keys = TenantKeys(DriverSQL(await session.connection()), self.keyring())  # type: ignore[arg-type]
            destroyed = await keys.destroy(tenant.id)
            try:
                kms = await keys.schedule_kms_deletion(tenant.id)
            except KeyUnavailable as exc:
                raise errors.KeyServiceUnavailable(str(exc)) from exc
            versions: list[dict[str, Any]] = await keys.versions(tenant.id)
            kms_key_id, kms_deletion_date = kms or (None, None)
            audit.record(session, actor, "tenant.keys.destroy", "tenant", tenant.id, versions=destroyed,
                         kms_key_id=kms_key_id, kms_deletion_date=kms_deletion_date and kms_deletion_date.isoformat())
        return KeysDestroyed(tenant_id=tenant.id, destroyed_versions=destroyed, kms_key_id=kms_key_id,
                             kms_deletion_date=kms_deletion_date,
                             versions=[msgspec.convert(v, KeyVersionOut, from_attributes=True) for v in versions])
