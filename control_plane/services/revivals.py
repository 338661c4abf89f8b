"""Restoring a deleted tenant under its id and slug: the checks, the tenant back to `provisioning`
on the tier asked, the `revive_tenant` operation and the audit row, in the caller's transaction
(BackupService.restore, which has the tenant row locked); the worker does the rest
(provisioning/revivals.py)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import Backup, Tenant, TenantErasure, TenantKey
from control_plane.schemas import RestoreTenant
from control_plane.services import audit
from provisioning import queue


async def _check_backup(session: AsyncSession, tenant: Tenant, backup_id: uuid.UUID, newest: str) -> Backup:
    backup = await session.get(Backup, backup_id)
    if backup is None:
        raise errors.UnknownBackup(f"no backup {backup_id}")
    if backup.tenant_id != tenant.id:
        raise errors.BackupOfOtherTenant("the backup belongs to another tenant; a clone (\"from_backup\") "
                                         "makes a new tenant of it")
    if backup.state != "succeeded":
        raise errors.BackupNotRestorable(f"the backup is {backup.state}; only a succeeded one restores")
    # revision ids are tNNNN, increasing: compared as text, as routers do
    if backup.revision is not None and backup.revision > newest:
        raise errors.BackupTooNew(f"the backup is at {backup.revision}; this code knows up to {newest}")
    key = await session.get(TenantKey, (tenant.id, backup.key_version)) if backup.key_version is not None else None
    if key is not None and (key.destroyed_at is not None or key.wrapped_key is None):
        raise errors.BackupKeysDestroyed("the tenant's backup keys were destroyed: its backups can no longer "
                                         "be read")
    return backup


async def queue_revival(session: AsyncSession, actor: str, tenant: Tenant, body: RestoreTenant,
                        newest: str) -> uuid.UUID:
    """The revival's operation id. `tenant` is deleted and locked (FOR UPDATE) by the caller;
    `newest`: the head of the process's tenant tree (a newer backup does not restore)."""
    if await session.scalar(select(TenantErasure.tenant_id).where(TenantErasure.tenant_id == tenant.id)):
        # an erasure asked for (even one not finished) wins: its backups and keys are going or gone
        raise errors.TenantErased("the tenant was erased: nothing of it can be restored")
    open_op = await queue.open_operation(DriverSQL(await session.connection()), tenant.id)
    if open_op is not None:
        raise errors.OperationInProgress(f"operation {open_op.id} ({open_op.kind}) is still running for this "
                                         "tenant", operation_id=str(open_op.id))
    backup = await _check_backup(session, tenant, body.backup_id, newest)
    if tenant.stripe_subscription_id is not None:
        # the delete's cancellation is still owed (billing/cancellations.py retries it): a tenant
        # made live now would be billed by a subscription that is about to end, or never end
        raise errors.SubscriptionNotCancelled("the subscription of the deleted tenant is not cancelled yet; "
                                              "try again once `tenantctl billing sync` has cancelled it")
    tier = body.tier.value if body.tier is not None else tenant.tier
    try:
        async with session.begin_nested():  # the live-slug index refuses a slug taken meanwhile
            await session.execute(update(Tenant).where(Tenant.id == tenant.id).values(
                status=TenantStatus.provisioning.value, tier=tier, deleted_at=None, updated_at=func.now()))
    except IntegrityError:
        raise errors.SlugTaken(f"slug {tenant.slug!r} is another tenant's now; a clone (\"from_backup\") "
                               "under a new slug gets this tenant's data back") from None
    operation_id = uuid.uuid4()
    await queue.enqueue(DriverSQL(await session.connection()), "revive_tenant", queue.NewOperation(
        id=operation_id, tenant_id=tenant.id, params={"backup_id": str(backup.id)}))
    audit.record(session, actor, "tenant.revive", "tenant", tenant.id, backup_id=str(backup.id), tier=tier,
                 operation_id=str(operation_id))
    return operation_id
