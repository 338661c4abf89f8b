"""Operations: reading them with their steps, and resuming a failed one from its failed step. The
statements are the queue's (provisioning/queue.py); this maps them to the API's shapes."""

from __future__ import annotations

import uuid

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.db import single_statement
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import Tenant
from control_plane.schemas import OperationList, OperationOut, OperationPage, StepOut
from control_plane.services import audit, cursors
from control_plane.services.lookup import find_tenant
from provisioning import queue
from provisioning.pipelines import in_flight_status


def _out(op: queue.OperationRecord) -> OperationOut:
    return OperationOut(
        id=op.id, kind=op.kind, tenant_id=op.tenant_id, state=op.state, error=op.error,
        created_at=op.created_at, started_at=op.started_at, finished_at=op.finished_at,
        progress=op.progress, cancel_requested=op.cancel_requested,
        steps=[StepOut(name=s.name, state=s.state, attempts=s.attempts, error=s.error,
                       started_at=s.started_at, finished_at=s.finished_at) for s in op.steps],
    )


def _parse(key: str) -> uuid.UUID:
    try:
        return uuid.UUID(key)
    except ValueError:
        raise errors.OperationNotFound(f"no operation {key[:100]!r}") from None


class OperationService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def get(self, key: str) -> OperationOut:
        """One query (the operation with its steps): a long poll reads it again the moment the
        operation ends, so this is on the path of every onboarding."""
        op_id = _parse(key)
        async with self.sessions() as session:
            op = await queue.read_operation(DriverSQL(await single_statement(session)), op_id)
        if op is None:
            raise errors.OperationNotFound(f"no operation {key!r}")
        return _out(op)

    async def list_for_tenant(self, key: str, limit: int = 50) -> OperationList:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key, include_deleted=True)
            ops = await queue.tenant_operations(DriverSQL(await session.connection()), tenant.id, limit)
        return OperationList(items=[_out(op) for op in ops])

    async def list(self, *, state: str | None, kind: str | None, tenant: str | None, limit: int,
                   cursor: str | None) -> OperationPage:
        """Operations across the fleet, newest first (failed or queued ones, of a kind, of a tenant)."""
        before = cursors.decode_uuid(cursor) if cursor else None
        async with self.sessions() as session:
            tenant_id = (await find_tenant(session, tenant, include_deleted=True)).id if tenant else None
            ops = await queue.list_operations(DriverSQL(await session.connection()), state=state, kind=kind,
                                              tenant_id=tenant_id, before=before, limit=limit + 1)
        items = [_out(op) for op in ops[:limit]]
        more = len(ops) > limit
        return OperationPage(items=items, next_cursor=cursors.encode(items[-1].created_at, items[-1].id) if more else None)

    async def cancel(self, actor: str, key: str) -> OperationOut:
        """Ask the workers to end a queued or running operation at its next step boundary, with
        the pipeline's undo; it then reads `failed` with the error `cancelled`."""
        op_id = _parse(key)
        async with self.sessions() as session, session.begin():
            db = DriverSQL(await session.connection())
            op = await queue.lock_operation(db, op_id)
            if op is None:
                raise errors.OperationNotFound(f"no operation {key!r}")
            if op.state not in queue.OPEN_STATES:
                raise errors.OperationFinished(f"operation {op_id} is {op.state}", state=op.state)
            await queue.request_cancel(db, op_id)
            audit.record(session, actor, "operation.cancel", "operation", op_id, kind=op.kind)
            await session.flush()
            return _out(await queue.read_operation(db, op_id))

    async def retry(self, actor: str, key: str) -> OperationOut:
        """Queue a failed operation again; the worker resumes it at its first step not done."""
        op_id = _parse(key)
        async with self.sessions() as session, session.begin():
            db = DriverSQL(await session.connection())
            op = await queue.lock_operation(db, op_id)
            if op is None:
                raise errors.OperationNotFound(f"no operation {key!r}")
            if op.state != "failed":
                raise errors.OperationNotRetryable(f"operation {op_id} is {op.state}", state=op.state)
            try:
                await queue.requeue(db, op_id)
            except IntegrityError:
                raise errors.OperationInProgress("another operation is running for this tenant") from None
            status = in_flight_status(op.kind)
            if status is not None:
                await session.execute(update(Tenant).where(Tenant.id == op.tenant_id, Tenant.status == "failed")
                                      .values(status=status, updated_at=func.now()))
            audit.record(session, actor, "operation.retry", "operation", op_id, kind=op.kind)
            await session.flush()
            # the operation as this retry left it (queued): read before the commit, since a worker
            # may claim it the moment the commit wakes it
            return _out(await queue.read_operation(db, op_id))
