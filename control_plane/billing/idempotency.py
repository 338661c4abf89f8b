"""Idempotency keys of outbound Stripe calls: written and committed before the call, reused by
every retry until the call's answer is recorded. A crash between Stripe doing the work and us
recording it therefore ends in the same request again, which Stripe answers with the first answer
(it keeps keys for 24 hours) instead of making a second customer."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.catalog.models import BillingIdempotencyKey


async def claim(session: AsyncSession, purpose: str) -> str:
    """The open key for `purpose`, made now if there is none. Commit before calling Stripe."""
    await session.execute(
        insert(BillingIdempotencyKey)
        .values(key="tp_" + secrets.token_urlsafe(24), purpose=purpose)
        .on_conflict_do_nothing(index_elements=["purpose"],
                                index_where=BillingIdempotencyKey.completed_at.is_(None)))
    return await session.scalar(select(BillingIdempotencyKey.key).where(
        BillingIdempotencyKey.purpose == purpose, BillingIdempotencyKey.completed_at.is_(None)))


async def complete(session: AsyncSession, key: str, result_id: str) -> None:
    """The call's answer is recorded: the next call for the same purpose is a new request."""
    await session.execute(update(BillingIdempotencyKey)
                          .where(BillingIdempotencyKey.key == key, BillingIdempotencyKey.completed_at.is_(None))
                          .values(completed_at=func.now(), result_id=result_id))
