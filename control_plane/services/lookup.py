"""Finding a tenant by the key an admin used: its id or its slug."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.models import Tenant
from control_plane.schemas import SLUG_PATTERN

_SLUG = re.compile(SLUG_PATTERN)


def parse_tenant_key(key: str) -> uuid.UUID | str | None:
    """A tenant id, a slug, or None for a key that can name no tenant (so it never reaches SQL:
    PostgreSQL text cannot even hold a NUL)."""
    try:
        return uuid.UUID(key)
    except ValueError:
        return key if _SLUG.search(key) else None


async def find_tenant(session: AsyncSession, key: str, *, lock: bool = False,
                      include_deleted: bool = False) -> Tenant:
    """A tenant by id or slug; deleted tenants only by id and only when asked for."""
    parsed = parse_tenant_key(key)
    if parsed is None:
        raise errors.TenantNotFound(f"no tenant {key[:100]!r}")
    by_id = isinstance(parsed, uuid.UUID)
    query = select(Tenant).where((Tenant.id == parsed) if by_id else (Tenant.slug == parsed))
    if not (include_deleted and by_id):
        query = query.where(Tenant.status != TenantStatus.deleted.value)
    if lock:
        query = query.with_for_update()
    tenant = await session.scalar(query)
    if tenant is None:
        raise errors.TenantNotFound(f"no tenant {key[:100]!r}")
    return tenant
