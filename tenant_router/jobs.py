"""Code that runs as a tenant outside a request: jobs, scripts, one-off fixes.

    async with tenant_context("acme") as db:          # by slug or id
        await db.execute("UPDATE projects SET ...")   # one transaction, bound as the router binds it

    report = await for_each_tenant(recount, per_server=4)   # every active tenant, bounded per server

The tenant is gated by its status as a request is (admission.py's gate): a deleted, deleting,
provisioning or failed tenant is refused, a suspended one too unless `include_suspended=True`, and
one under maintenance unless `read_only=True`; a tenant below the router's `min_tenant_revision`
is refused as well. Billing and rate limits are the plan's limits on requests and do not apply.
Inside the block `current_tenant()` is the tenant, so the application's own helpers work unchanged.

Without a `router`, the one serving the current request (asgi.py) is used, or else one is started
from `config` (default `RouterConfig.from_env()`) for the length of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import msgspec

from contracts.placement import Placement, TenantStatus
from tenant_router import binding
from tenant_router.asgi import serving_router
from tenant_router.config import RouterConfig
from tenant_router.context import tenant_scope
from tenant_router.errors import RouterError, TenantNotFound
from tenant_router.gates import check_revision, check_status
from tenant_router.resolution import TenantKey
from tenant_router.runtime import TenantRouter

FLEET_LIMIT = 1_000_000  # tenants listed for for_each_tenant(): all of them, in one query


@contextlib.asynccontextmanager
async def started_router(config: RouterConfig | None = None) -> AsyncIterator[TenantRouter]:
    """A router of its own for a script, stopped at the end."""
    router = TenantRouter(config or RouterConfig.from_env())
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@contextlib.asynccontextmanager
async def _some_router(router: TenantRouter | None, config: RouterConfig | None) -> AsyncIterator[TenantRouter]:
    router = router or serving_router()
    if router is not None:
        yield router
        return
    async with started_router(config) as own:
        yield own


def tenant_key(tenant: str | uuid.UUID) -> TenantKey:
    """An id (a UUID, or its text) or else a slug."""
    if isinstance(tenant, uuid.UUID):
        return TenantKey("id", str(tenant))
    try:
        return TenantKey("id", str(uuid.UUID(tenant)))
    except ValueError:
        return TenantKey("slug", tenant)


def admit_job(placement: Placement, min_revision: str | None, *, include_suspended: bool, read_only: bool) -> None:
    """The status gate of a request (a write, unless `read_only`), with suspended tenants let in
    only when asked for explicitly."""
    if not (include_suspended and placement.status is TenantStatus.suspended):
        check_status(placement, "GET" if read_only else "POST")
    check_revision(placement, min_revision)


async def find_tenant(router: TenantRouter, tenant: str | uuid.UUID, *, include_suspended: bool = False,
                      read_only: bool = False) -> Placement:
    placement = await router.directory.get_placement(tenant_key(tenant))
    if placement is None:
        raise TenantNotFound("no such tenant")
    admit_job(placement, router.config.min_tenant_revision, include_suspended=include_suspended, read_only=read_only)
    return placement


@contextlib.asynccontextmanager
async def tenant_context(tenant: str | uuid.UUID | Placement, *, router: TenantRouter | None = None,
                         config: RouterConfig | None = None, include_suspended: bool = False,
                         read_only: bool = False) -> AsyncIterator[asyncpg.Connection]:
    """A connection in one transaction bound to `tenant` (slug, id, or a Placement already
    gated), committed when the block ends and rolled back when it raises."""
    async with _some_router(router, config) as running:
        if isinstance(tenant, Placement):
            placement = tenant
        else:
            # get_placement, not the cache: a job acts on what the catalog says now
            placement = await find_tenant(running, tenant, include_suspended=include_suspended, read_only=read_only)
        with tenant_scope(placement):
            async with binding.tenant_transaction(running.pools, placement, running.config.budget_fraction) as conn:
                yield conn


class TenantOutcome(msgspec.Struct):
    """One tenant's part of a for_each report: `result` when `ok`, else `error` (its type and,
    for a router refusal, its stable code)."""

    tenant_id: str
    slug: str
    ok: bool
    result: Any = None
    error: str | None = None


async def fleet(router: TenantRouter, tenants: Iterable[str | uuid.UUID] | None = None, *,
                include_suspended: bool = False) -> tuple[list[Placement], list[TenantOutcome]]:
    """The tenants to run for: the named ones, or every active one (and suspended ones if asked);
    the named ones the gates refuse come back as failed outcomes."""
    if tenants is None:
        placements, _ = await router.directory.source.live(FLEET_LIMIT)
        wanted = {TenantStatus.active, *((TenantStatus.suspended,) if include_suspended else ())}
        return [p for p in placements if p.status in wanted], []
    chosen: list[Placement] = []
    refused: list[TenantOutcome] = []
    for name in tenants:
        try:
            chosen.append(await find_tenant(router, name, include_suspended=include_suspended))
        except RouterError as exc:
            refused.append(TenantOutcome(tenant_id="", slug=str(name), ok=False, error=exc.code))
    return chosen, refused


async def run_per_server(placements: Iterable[Placement], run: Callable[[Placement], Awaitable[Any]],
                         per_server: int) -> list[TenantOutcome]:
    """`run(placement)` for each, at most `per_server` at once on any one database server (so a
    fleet job never takes more than that of a server's connections); every failure is recorded,
    none stops the others."""
    if per_server < 1:
        raise ValueError("per_server must be at least 1")
    gates: dict[Any, asyncio.Semaphore] = {}

    async def one(placement: Placement) -> TenantOutcome:
        gate = gates.setdefault(placement.server_id, asyncio.Semaphore(per_server))
        async with gate:
            outcome = TenantOutcome(tenant_id=str(placement.tenant_id), slug=placement.slug, ok=True)
            try:
                outcome.result = await run(placement)
            except RouterError as exc:
                outcome.ok, outcome.error = False, exc.code
            except Exception as exc:  # the job's own error: its type only (messages may carry data)
                outcome.ok, outcome.error = False, type(exc).__name__
            return outcome

    return list(await asyncio.gather(*(one(p) for p in placements)))


async def for_each_tenant(job: Callable[[asyncpg.Connection, Placement], Awaitable[Any]], *,
                          tenants: Iterable[str | uuid.UUID] | None = None, per_server: int = 4,
                          include_suspended: bool = False, router: TenantRouter | None = None,
                          config: RouterConfig | None = None) -> list[TenantOutcome]:
    """`await job(db, tenant)` for every active tenant (or the named ones), each in its own
    `tenant_context` transaction; one outcome per tenant, failed ones rolled back."""
    async with _some_router(router, config) as running:
        chosen, refused = await fleet(running, tenants, include_suspended=include_suspended)

        async def run(placement: Placement) -> Any:
            async with tenant_context(placement, router=running) as db:
                return await job(db, placement)

        return refused + await run_per_server(chosen, run, per_server)
