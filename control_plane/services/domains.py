"""Custom domains: a host name that routes to one tenant (besides `{slug}.{apex}`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import TenantDomain
from control_plane.schemas import DomainList, DomainOut
from control_plane.services import audit, notify
from control_plane.services.lookup import find_tenant
from tenant_router.resolution import is_valid_domain, normalise_host


def _out(row: TenantDomain) -> DomainOut:
    return DomainOut(domain=row.domain, tenant_id=row.tenant_id, created_at=row.created_at)


class DomainService:
    def __init__(self, sessions: async_sessionmaker, redis: Any, apex: str) -> None:
        self.sessions = sessions
        self.redis = redis
        self.apex = normalise_host(apex)

    def _normalise(self, domain: str) -> str:
        name = normalise_host(domain) if domain.isascii() and domain.isprintable() else ""
        if not is_valid_domain(name):
            raise errors.DomainInvalid("expected a host name such as app.example.com")
        if name == self.apex or name.endswith("." + self.apex):
            raise errors.DomainInvalid(f"names under {self.apex} are tenant subdomains already")
        return name

    async def add(self, actor: str, key: str, domain: str) -> DomainOut:
        name = self._normalise(domain)
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            row = TenantDomain(domain=name, tenant_id=tenant.id)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:
                raise errors.DomainTaken(f"{name} already routes to a tenant") from None
            await session.refresh(row)
            audit.record(session, actor, "tenant.domain.add", "tenant", tenant.id, domain=name)
            noted = await notify.note(self.redis, session, [tenant.id], [("domain", name)])
        await notify.placement_changed(self.redis, tenant.id, [("domain", name)], noted)
        return _out(row)

    async def list(self, key: str) -> DomainList:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key)
            rows = (await session.scalars(select(TenantDomain).where(TenantDomain.tenant_id == tenant.id)
                                          .order_by(TenantDomain.domain))).all()
        return DomainList(items=[_out(r) for r in rows])

    async def remove(self, actor: str, key: str, domain: str) -> None:
        # only printable ASCII was ever stored (and PostgreSQL text cannot even hold a NUL); no
        # stricter check, so that a domain stored before a rule was added can still be removed
        if not (domain.isascii() and domain.isprintable()):
            raise errors.DomainNotFound("no such domain")
        name = normalise_host(domain)
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            gone = await session.scalar(delete(TenantDomain).where(
                TenantDomain.tenant_id == tenant.id, TenantDomain.domain == name).returning(TenantDomain.domain))
            if gone is None:
                raise errors.DomainNotFound(f"{name[:253]} is not a domain of this tenant")
            audit.record(session, actor, "tenant.domain.remove", "tenant", tenant.id, domain=name)
            noted = await notify.note(self.redis, session, [tenant.id], [("domain", name)])
        await notify.placement_changed(self.redis, tenant.id, [("domain", name)], noted)
