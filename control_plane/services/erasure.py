"""Erasure use cases: request it (the tenants_erasures row, the erase_tenant operation and the audit
row in one transaction; the worker does the rest, provisioning/erasure.py), ask for it with a
delete, and read its report."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import Tenant, TenantErasure
from control_plane.schemas import ErasurePlace, ErasureReport
from control_plane.services import audit
from control_plane.services.lookup import find_tenant
from provisioning import queue
from provisioning.inventory import PLACE_NAMES

# the places a delete already emptied before erasure could start: the report says so
_DONE_BY_DELETE = {"database": {"removed": "dropped by the delete", "by": "delete_tenant"}}


def _report(row: TenantErasure, deleted_at: Any) -> ErasureReport:
    places = []
    for name in PLACE_NAMES:
        entry: dict[str, Any] = dict(row.places.get(name) or {})
        at = entry.pop("at", None)
        if name in _DONE_BY_DELETE:
            places.append(ErasurePlace(place=name, done=True, at=deleted_at, details=_DONE_BY_DELETE[name]))
            continue
        places.append(ErasurePlace(place=name, done=at is not None, at=at, details=entry))
    return ErasureReport(tenant_id=row.tenant_id, status="completed" if row.completed_at else "requested",
                         requested_at=row.requested_at, completed_at=row.completed_at,
                         operation_id=row.operation_id, places=places)


async def ask_with_delete(session: AsyncSession, actor: str, tenant_id: uuid.UUID) -> uuid.UUID:
    """`DELETE /v1/tenants/{id}?erase=true`, in the delete's transaction (the tenant row locked):
    the erasure is recorded now under the id its operation will have, and the delete's finish
    queues that operation (provisioning/pipelines.py: queue_asked_erasure), so the erasure starts
    when the delete ends even if this process is gone by then. Asked again: the same id. The
    finish updates the tenant row too, so it waits for this transaction and then sees the row (or
    this one finds the tenant deleted, without an open delete to add an erasure to)."""
    row = await session.get(TenantErasure, tenant_id, with_for_update=True)
    if row is None:
        row = TenantErasure(tenant_id=tenant_id, operation_id=uuid.uuid4(), places={})
        session.add(row)
        audit.record(session, actor, "tenant.erase", "tenant", tenant_id, operation_id=str(row.operation_id),
                     after="delete")
    elif row.operation_id is None:
        row.operation_id = uuid.uuid4()
    await session.flush()
    return row.operation_id  # type: ignore[return-value]


async def request_in(session: AsyncSession, actor: str, tenant: Tenant) -> tuple[TenantErasure, bool]:
    """The erasure of `tenant` (its row locked by the caller) in the caller's transaction: queued
    now unless it completed or is running; 409 `tenant_not_deleted` for a tenant not deleted."""
    row = await session.get(TenantErasure, tenant.id, with_for_update=True)
    if row is not None and (row.completed_at is not None or await _running(session, tenant.id)):
        return row, False
    if tenant.status != TenantStatus.deleted.value:
        raise errors.TenantNotDeleted(f"the tenant is {tenant.status!r}; DELETE it first, then erase it",
                                      current=tenant.status)
    operation = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant.id)
    await queue.enqueue(DriverSQL(await session.connection()), "erase_tenant", operation)
    if row is None:
        row = TenantErasure(tenant_id=tenant.id, operation_id=operation.id, places={})
        session.add(row)
    else:
        row.operation_id = operation.id
    audit.record(session, actor, "tenant.erase", "tenant", tenant.id, operation_id=str(operation.id))
    await session.flush()
    await session.refresh(row)
    return row, True


async def _running(session: AsyncSession, tenant_id: uuid.UUID) -> bool:
    open_op = await queue.open_operation(DriverSQL(await session.connection()), tenant_id)
    return open_op is not None and open_op.kind == "erase_tenant"


class ErasureService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def request(self, actor: str, key: str) -> tuple[ErasureReport, bool]:
        """(the report, whether an erasure was queued now). Asked again: the same erasure, no new one,
        except after a failed one (then its steps run again: each is idempotent)."""
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True, include_deleted=True)
            row, queued = await request_in(session, actor, tenant)
            return _report(row, tenant.deleted_at), queued

    async def report(self, key: str) -> ErasureReport:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key, include_deleted=True)
            row = await session.scalar(select(TenantErasure).where(TenantErasure.tenant_id == tenant.id))
            if row is None:
                raise errors.ErasureNotFound(f"no erasure of tenant {tenant.id}")
            return _report(row, tenant.deleted_at)
