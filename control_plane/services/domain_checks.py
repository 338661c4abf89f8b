"""The workers' re-check of pending custom domains (DOMAIN_VERIFICATION=dns): a tenant that
creates its TXT record need not come back to call verify; within DOMAIN_VERIFICATION_INTERVAL_SECONDS
a worker finds the record and the domain routes.

Each round claims the claims it checks in one statement (checked_at moved on, rows locked with
SKIP LOCKED), so workers running rounds at the same time look up different domains; a worker
killed mid-round leaves a claim checked a little early, no more. Promotion is DomainService's, the
same transaction as the API's verify, so both may race and one wins cleanly."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.db import sessionmaker
from control_plane.catalog.models import DomainChallenge
from control_plane.domain_dns import ChallengeResolver, challenge_resolver
from control_plane.services import notify
from control_plane.services.domains import DomainService
from control_plane.settings import Settings

log = logging.getLogger("tenantplane.domains")

ACTOR = "worker:domain-checks"  # who the audit names for a domain the re-check promoted
BATCH = 100  # claims per round; the next round takes the rest


class PendingDomainChecks:
    def __init__(self, sessions: async_sessionmaker, domains: DomainService, resolver: ChallengeResolver,
                 interval: float) -> None:
        self.sessions = sessions
        self.domains = domains
        self.resolver = resolver
        self.interval = interval

    async def _claim(self) -> list[tuple[uuid.UUID, str, str]]:
        due = (select(DomainChallenge.tenant_id, DomainChallenge.domain)
               .where(or_(DomainChallenge.checked_at.is_(None),
                          DomainChallenge.checked_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0,
                                                                                       self.interval)))
               .order_by(DomainChallenge.checked_at.asc().nulls_first()).limit(BATCH)
               .with_for_update(skip_locked=True))
        async with self.sessions() as session, session.begin():
            rows = await session.execute(
                update(DomainChallenge)
                .where(tuple_(DomainChallenge.tenant_id, DomainChallenge.domain).in_(due))
                .values(checked_at=func.now())
                .returning(DomainChallenge.tenant_id, DomainChallenge.domain, DomainChallenge.token))
            return [tuple(r) for r in rows]

    async def round(self) -> int:
        """One pass over the due claims; how many now route."""
        promoted = 0
        for tenant_id, domain, token in await self._claim():
            if token not in (await self.resolver.txt(domain)).values:
                continue
            try:
                await self.domains.promote(ACTOR, str(tenant_id), domain, verified=True)
            except errors.ControlPlaneError as exc:  # taken by another tenant, or removed meanwhile
                log.info("pending domain not promoted: %s", exc.code)
                continue
            promoted += 1
        return promoted

    async def run(self) -> None:
        """Rounds every `interval` seconds until cancelled; a failed round is logged, never a death."""
        while True:
            try:
                done = await self.round()
                if done:
                    log.info("pending custom domains verified: %d", done)
            except Exception as exc:  # the catalog or DNS away: the next round tries again
                log.warning("the pending domain re-check failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)


class WorkerDomainChecks:
    """The re-check as one of a worker's duties (control_plane/cli/processes.py composes it), with
    a small catalog engine and the same bounded, outboxed announcements as the API's."""

    def __init__(self, settings: Settings) -> None:
        self._side = notify.CatalogSide(settings, pool_size=2)
        resolver = challenge_resolver(settings.domain_verification, settings.domain_verification_nameservers,
                                      settings.domain_verification_timeout_seconds)
        if resolver is None:
            raise ValueError("the pending domain re-check runs only with DOMAIN_VERIFICATION=dns")
        sessions = sessionmaker(self._side.engine)
        self.checks = PendingDomainChecks(
            sessions, DomainService(sessions, self._side.announcer, settings.tenant_apex, resolver), resolver,
            settings.domain_verification_interval_seconds)

    async def run(self) -> None:
        await self.checks.run()

    async def close(self) -> None:
        await self._side.close()
