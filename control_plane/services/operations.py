"""Reading operations and their steps."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import Operation, OperationStep
from control_plane.schemas import OperationOut, StepOut


class OperationService:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.sessions = sessions

    async def get(self, key: str) -> OperationOut:
        try:
            op_id = uuid.UUID(key)
        except ValueError:
            raise errors.OperationNotFound(f"no operation {key!r}") from None
        async with self.sessions() as session:
            op = await session.get(Operation, op_id)
            if op is None:
                raise errors.OperationNotFound(f"no operation {key!r}")
            steps = (await session.scalars(select(OperationStep).where(OperationStep.operation_id == op_id)
                                           .order_by(OperationStep.position))).all()
        return OperationOut(
            id=op.id, kind=op.kind, tenant_id=op.tenant_id, state=op.state, error=op.error,
            created_at=op.created_at, started_at=op.started_at, finished_at=op.finished_at,
            steps=[StepOut(name=s.name, state=s.state, attempts=s.attempts, error=s.error,
                           started_at=s.started_at, finished_at=s.finished_at) for s in steps],
        )
