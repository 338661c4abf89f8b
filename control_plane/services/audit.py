"""The audit log: one row for every admin write, in the same transaction as the write."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.catalog.models import AuditLog


def record(session: AsyncSession, actor: str, action: str, target_type: str, target_id: object,
           **details: Any) -> None:
    session.add(AuditLog(actor=actor, action=action, target_type=target_type,
                         target_id=None if target_id is None else str(target_id), details=details))
