"""Finding a tenant by the key an admin used: its id or its slug."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.models import Tenant


async def find_tenant(session: AsyncSession, key: str, *, lock: bool = False,
                      include_deleted: bool = False) -> Tenant:
    """A tenant by id or slug; deleted tenants only by id and only when asked for."""
    if "\x00" in key:  # PostgreSQL text cannot hold NUL: such a key names nothing
        raise errors.TenantNotFound(f"no tenant {key[:100]!r}")
    try:
        query = select(Tenant).where(Tenant.id == uuid.UUID(key))
        by_id = True
    except ValueError:
        query = select(Tenant).where(Tenant.slug == key)
        by_id = False
    if not (include_deleted and by_id):
        query = query.where(Tenant.status != TenantStatus.deleted.value)
    if lock:
        query = query.with_for_update()
    tenant = await session.scalar(query)
    if tenant is None:
        raise errors.TenantNotFound(f"no tenant {key[:100]!r}")
    return tenant
