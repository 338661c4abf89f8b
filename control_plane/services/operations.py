"""Operations: reading them with their steps, and resuming a failed one from its failed step."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane import errors
from control_plane.catalog.db import single_statement
from control_plane.catalog.models import Operation, OperationStep, Tenant
from control_plane.schemas import OperationList, OperationOut, StepOut
from control_plane.services import audit, notify
from control_plane.services.lookup import find_tenant
from provisioning.pipelines import in_flight_status


def _out(op: Operation, steps: Sequence[OperationStep]) -> OperationOut:
    return OperationOut(
        id=op.id, kind=op.kind, tenant_id=op.tenant_id, state=op.state, error=op.error,
        created_at=op.created_at, started_at=op.started_at, finished_at=op.finished_at,
        steps=[StepOut(name=s.name, state=s.state, attempts=s.attempts, error=s.error,
                       started_at=s.started_at, finished_at=s.finished_at) for s in steps],
    )


_STEPS = msgspec.json.Decoder(list[StepOut])
_OPERATION_WITH_STEPS = text(
    "SELECT o.id, o.kind, o.tenant_id, o.state, o.error, o.created_at, o.started_at, o.finished_at, "
    "  coalesce((SELECT json_agg(json_build_object('name', s.name, 'state', s.state, 'attempts', s.attempts, "
    "      'error', s.error, 'started_at', s.started_at, 'finished_at', s.finished_at) ORDER BY s.position) "
    "    FROM operation_steps s WHERE s.operation_id = o.id), '[]')::text AS steps "
    "FROM operations o WHERE o.id = :id")


def _row_out(row: Any) -> OperationOut:
    return OperationOut(id=row.id, kind=row.kind, tenant_id=row.tenant_id, state=row.state, error=row.error,
                        created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
                        steps=_STEPS.decode(row.steps))


def _parse(key: str) -> uuid.UUID:
    try:
        return uuid.UUID(key)
    except ValueError:
        raise errors.OperationNotFound(f"no operation {key[:100]!r}") from None


async def _steps(session: AsyncSession, op_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[OperationStep]]:
    rows = (await session.scalars(select(OperationStep).where(OperationStep.operation_id.in_(op_ids))
                                  .order_by(OperationStep.operation_id, OperationStep.position))).all()
    by_op: dict[uuid.UUID, list[OperationStep]] = {op_id: [] for op_id in op_ids}
    for step in rows:
        by_op[step.operation_id].append(step)
    return by_op


class OperationService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def get(self, key: str) -> OperationOut:
        """One query (the operation with its steps as JSON): a long poll reads it again the moment
        the operation ends, so this is on the path of every onboarding."""
        op_id = _parse(key)
        async with self.sessions() as session:
            row = (await (await single_statement(session)).execute(_OPERATION_WITH_STEPS, {"id": op_id})).first()
        if row is None:
            raise errors.OperationNotFound(f"no operation {key!r}")
        return _row_out(row)

    async def list_for_tenant(self, key: str, limit: int = 50) -> OperationList:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key, include_deleted=True)
            ops = (await session.scalars(select(Operation).where(Operation.tenant_id == tenant.id)
                                         .order_by(Operation.created_at.desc()).limit(limit))).all()
            steps = await _steps(session, [op.id for op in ops])
        return OperationList(items=[_out(op, steps[op.id]) for op in ops])

    async def retry(self, actor: str, key: str) -> OperationOut:
        """Queue a failed operation again; the worker resumes it at its first step not done."""
        op_id = _parse(key)
        async with self.sessions() as session, session.begin():
            op = await session.get(Operation, op_id, with_for_update=True)
            if op is None:
                raise errors.OperationNotFound(f"no operation {key!r}")
            if op.state != "failed":
                raise errors.OperationNotRetryable(f"operation {op.id} is {op.state}", state=op.state)
            await session.execute(update(OperationStep)
                                  .where(OperationStep.operation_id == op.id, OperationStep.state == "failed")
                                  .values(state="pending", attempts=0))
            op.state, op.error, op.finished_at, op.next_attempt_at = "queued", None, None, func.now()
            status = in_flight_status(op.kind)
            if status is not None:
                await session.execute(update(Tenant).where(Tenant.id == op.tenant_id, Tenant.status == "failed")
                                      .values(status=status, updated_at=func.now()))
            audit.record(session, actor, "operation.retry", "operation", op.id, kind=op.kind)
            try:
                await session.flush()
            except IntegrityError:
                raise errors.OperationInProgress("another operation is running for this tenant") from None
            await notify.wake_workers(session)
            # the operation as this retry left it (queued): read before the commit, since a worker
            # may claim it the moment the commit wakes it
            return _row_out((await session.execute(_OPERATION_WITH_STEPS, {"id": op_id})).one())
