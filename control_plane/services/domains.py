"""Custom domains: a host name that routes to one tenant (besides `{slug}.{apex}`).

With DOMAIN_VERIFICATION=dns an added domain is a pending challenge (domain_challenges), which no
router can read, until its TXT record is found; then, in one transaction, the challenge goes and
the domain joins tenant_domains (what routers read) and is announced. With `off` an added domain
routes at once, on the admin's word."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane import errors
from control_plane.catalog.models import DomainChallenge, TenantDomain
from control_plane.domain_dns import MAX_VALUE_CHARS, MAX_VALUES, ChallengeResolver, challenge_name, fits_in_dns
from control_plane.schemas import DomainChallengeOut, DomainList, DomainOut
from control_plane.services import audit, notify
from control_plane.services.lookup import find_tenant
from tenant_router.resolution import is_valid_domain, normalise_host


def _routed(row: TenantDomain) -> DomainOut:
    return DomainOut(domain=row.domain, tenant_id=row.tenant_id, created_at=row.created_at,
                     status="verified" if row.verified_at else "unverified", verified_at=row.verified_at)


def _pending(row: DomainChallenge) -> DomainOut:
    return DomainOut(domain=row.domain, tenant_id=row.tenant_id, created_at=row.created_at, status="pending",
                     challenge=DomainChallengeOut(name=challenge_name(row.domain), value=row.token),
                     checked_at=row.checked_at)


class DomainService:
    def __init__(self, sessions: async_sessionmaker, redis: Any, apex: str,
                 resolver: ChallengeResolver | None = None) -> None:
        self.sessions = sessions
        self.redis = redis
        self.apex = normalise_host(apex)
        self.resolver = resolver  # None: DOMAIN_VERIFICATION=off

    def _normalise(self, domain: str) -> str:
        name = normalise_host(domain) if domain.isascii() and domain.isprintable() else ""
        if not is_valid_domain(name):
            raise errors.DomainInvalid("expected a host name such as app.example.com")
        if name == self.apex or name.endswith("." + self.apex):
            raise errors.DomainInvalid(f"names under {self.apex} are tenant subdomains already")
        if self.resolver is not None and not fits_in_dns(name):
            raise errors.DomainInvalid(f"{challenge_name(name)} would be longer than DNS allows")
        return name

    @staticmethod
    def _path_name(domain: str) -> str:
        # only printable ASCII was ever stored (and PostgreSQL text cannot even hold a NUL); no
        # stricter check, so that a domain stored before a rule was added can still be removed
        if not (domain.isascii() and domain.isprintable()):
            raise errors.DomainNotFound("no such domain")
        return normalise_host(domain)

    async def add(self, actor: str, key: str, domain: str) -> DomainOut:
        name = self._normalise(domain)
        if self.resolver is not None:
            return await self._challenge(actor, key, name)
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            row = await self._route(session, tenant.id, name, verified=False)
            audit.record(session, actor, "tenant.domain.add", "tenant", tenant.id, domain=name)
            noted = await notify.note(self.redis, session, [tenant.id], [("domain", name)])
        await notify.placement_changed(self.redis, tenant.id, [("domain", name)], noted)
        return _routed(row)

    @staticmethod
    async def _route(session: AsyncSession, tenant_id: Any, name: str, *, verified: bool) -> TenantDomain:
        row = TenantDomain(domain=name, tenant_id=tenant_id, verified_at=func.now() if verified else None)
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            raise errors.DomainTaken(f"{name} already routes to a tenant") from None
        await session.refresh(row)
        return row

    async def _challenge(self, actor: str, key: str, name: str) -> DomainOut:
        """The tenant's pending claim on `name`; adding it again answers the same token."""
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            routed = await session.get(TenantDomain, name)
            if routed is not None:
                if routed.tenant_id == tenant.id:
                    return _routed(routed)
                raise errors.DomainTaken(f"{name} already routes to a tenant")
            row = await session.get(DomainChallenge, (tenant.id, name))
            if row is None:
                row = DomainChallenge(domain=name, tenant_id=tenant.id, token=secrets.token_urlsafe(32))
                session.add(row)
                await session.flush()
                await session.refresh(row)
                audit.record(session, actor, "tenant.domain.challenge", "tenant", tenant.id, domain=name)
        return _pending(row)

    async def verify(self, actor: str, key: str, domain: str) -> DomainOut:
        """Look the challenge up; found: the domain routes (and routers are told). Idempotent: a
        domain that routes to the tenant already is answered as it is."""
        name = self._path_name(domain)
        async with self.sessions() as session:
            tenant = await find_tenant(session, key)
            routed = await session.get(TenantDomain, name)
            if routed is not None and routed.tenant_id == tenant.id:
                return _routed(routed)
            challenge = await session.get(DomainChallenge, (tenant.id, name))
            if challenge is None:
                raise errors.DomainNotFound(f"{name[:253]} is not a domain of this tenant")
            if routed is not None:
                raise errors.DomainTaken(f"{name} already routes to a tenant")
            token = challenge.token
        lookup = None
        if self.resolver is None:  # verification turned off after the claim: the admin's word is enough
            found = True
        else:
            lookup = await self.resolver.txt(name)
            found = token in lookup.values
        if not found:
            await self._checked(tenant.id, name)
            values = [v[:MAX_VALUE_CHARS] for v in lookup.values[:MAX_VALUES]]
            raise errors.DomainNotVerified(
                f"no TXT record {challenge_name(name)} holds this domain's token yet",
                record=challenge_name(name), expected=token, lookup=lookup.outcome, found=values)
        return await self.promote(actor, key, name, verified=lookup is not None)

    async def promote(self, actor: str, key: str, name: str, *, verified: bool) -> DomainOut:
        """The claim proved: in one transaction the challenge goes and the domain routes (routers
        are told after the commit). A claim already promoted or removed meanwhile is not an error
        for the first and `domain_not_found` for the second."""
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            gone = await session.scalar(delete(DomainChallenge).where(
                DomainChallenge.tenant_id == tenant.id, DomainChallenge.domain == name)
                .returning(DomainChallenge.domain))
            if gone is None:  # removed (or verified) by a request that ran meanwhile
                routed = await session.get(TenantDomain, name)
                if routed is not None and routed.tenant_id == tenant.id:
                    return _routed(routed)
                raise errors.DomainNotFound(f"{name[:253]} is not a domain of this tenant")
            row = await self._route(session, tenant.id, name, verified=verified)
            audit.record(session, actor, "tenant.domain.verify", "tenant", tenant.id, domain=name)
            noted = await notify.note(self.redis, session, [tenant.id], [("domain", name)])
        await notify.placement_changed(self.redis, tenant.id, [("domain", name)], noted)
        return _routed(row)

    async def _checked(self, tenant_id: Any, name: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(update(DomainChallenge).where(
                DomainChallenge.tenant_id == tenant_id, DomainChallenge.domain == name)
                .values(checked_at=func.now()))

    async def list(self, key: str) -> DomainList:
        async with self.sessions() as session:
            tenant = await find_tenant(session, key)
            rows = (await session.scalars(select(TenantDomain).where(TenantDomain.tenant_id == tenant.id))).all()
            pending = (await session.scalars(select(DomainChallenge)
                                             .where(DomainChallenge.tenant_id == tenant.id))).all()
        items = [_routed(r) for r in rows] + [_pending(r) for r in pending]
        return DomainList(items=sorted(items, key=lambda d: d.domain))

    async def remove(self, actor: str, key: str, domain: str) -> None:
        name = self._path_name(domain)
        async with self.sessions() as session, session.begin():
            tenant = await find_tenant(session, key, lock=True)
            claim = await session.scalar(delete(DomainChallenge).where(
                DomainChallenge.tenant_id == tenant.id, DomainChallenge.domain == name)
                .returning(DomainChallenge.domain))
            gone = await session.scalar(delete(TenantDomain).where(
                TenantDomain.tenant_id == tenant.id, TenantDomain.domain == name).returning(TenantDomain.domain))
            if gone is None and claim is None:
                raise errors.DomainNotFound(f"{name[:253]} is not a domain of this tenant")
            audit.record(session, actor, "tenant.domain.remove", "tenant", tenant.id, domain=name)
            if gone is None:  # only a pending claim: no router ever routed it
                return
            noted = await notify.note(self.redis, session, [tenant.id], [("domain", name)])
        await notify.placement_changed(self.redis, tenant.id, [("domain", name)], noted)
