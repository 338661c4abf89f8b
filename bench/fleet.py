"""Building a benchmark fleet of dedicated tenants, quickly but through the product's own code.

How a fleet is built:

1. The server's template database (`tp_template`) is brought to the newest tenant revision by the
   provisioner's own `upgrade_template()`, and `ROWS_PER_TENANT` demo projects are inserted into it
   once, so every `CREATE DATABASE ... TEMPLATE tp_template` copy starts with the same rows (the
   handler under test then returns a real, non-empty list).
2. The tenants are created through the control plane's `TenantService.create()` (catalog row,
   audit row and queued `create_tenant` operation in one transaction, as `POST /v1/tenants` does),
   `create_concurrency` at a time: `n` dedicated tenants, and `shared` tenants on the shared tier.
3. A provisioning `Worker` runs in this process with `worker_concurrency` operations at a time and
   runs the real pipelines (dedicated: place, template check, role, CREATE DATABASE ... TEMPLATE,
   migrate check, harden; shared: place, shared database, migrate, grants) until every tenant is
   `active`, bounded by `timeout`.
4. Shared-tier tenants get their `ROWS_PER_TENANT` projects inserted into `tp_shared` with their
   `tenant_id` (by the server's admin, in one statement), so both tiers answer the same list.

Nothing here is measured as part of a figure: the goal is to measure routing, not provisioning (the
time the fleet took is reported for information only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

import asyncpg

from bench.stack import Stack

ROWS_PER_TENANT = 5


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    slug: str
    database: str
    role: str
    tier: str = "dedicated"

    @property
    def host(self) -> str:
        return f"{self.slug}.localhost"


@dataclass
class Fleet:
    tenants: list[Tenant]
    build_seconds: float


async def _seed_template(stack: Stack) -> None:
    from contracts.identifiers import TEMPLATE_DATABASE
    from provisioning.sealing import SecretBox
    from provisioning.servers import load_server
    from provisioning.template import upgrade_template

    box = SecretBox(stack.settings.secret_key)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        server_id = await catalog.fetchval("SELECT id FROM database_servers")
        server = await load_server(catalog, server_id)  # type: ignore[arg-type]
    finally:
        await catalog.close()
    await upgrade_template(server, box, stack.settings.tenant_tree)
    template = await asyncpg.connect(stack.pg.dsn(TEMPLATE_DATABASE))
    try:
        if await template.fetchval("SELECT count(*) FROM projects"):
            return  # seeded by an earlier build in this stack
        await template.executemany("INSERT INTO projects (name) VALUES ($1)",
                                   [(f"project {i}",) for i in range(1, ROWS_PER_TENANT + 1)])
    finally:
        await template.close()


async def _seed_shared(stack: Stack, tenants: list[Tenant]) -> None:
    from contracts.identifiers import SHARED_DATABASE

    ids = [t.id for t in tenants if t.tier == "shared"]
    if not ids:
        return
    shared = await asyncpg.connect(stack.pg.dsn(SHARED_DATABASE))  # the admin: not subject to RLS
    try:
        await shared.execute(
            "INSERT INTO projects (tenant_id, name) SELECT t, 'project ' || i "
            "FROM unnest($1::uuid[]) AS t, generate_series(1, $2) AS i", ids, ROWS_PER_TENANT)
    finally:
        await shared.close()


async def build_fleet(stack: Stack, n: int, *, shared: int = 0, prefix: str = "b", worker_concurrency: int = 8,
                      create_concurrency: int = 4, timeout: float = 600.0) -> Fleet:
    from contracts.placement import Tier
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.schemas import CreateTenant
    from control_plane.services.tenants import TenantService
    from provisioning.worker import Worker, WorkerConfig

    started = time.monotonic()
    await _seed_template(stack)
    # the worker logs one line per operation: keep the benchmark's output readable
    logging.getLogger("tenantplane.worker").setLevel(logging.WARNING)
    worker = Worker(WorkerConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                                 redis_url=stack.settings.redis_url, poll_interval=0.1,
                                 concurrency=worker_concurrency, retry_base_seconds=0.2))
    stop = asyncio.Event()
    worker_task = asyncio.create_task(worker.run(stop))
    engine = create_engine(stack.catalog_dsn, pool_size=create_concurrency)
    try:
        service = TenantService(sessionmaker(engine), stack.settings.tenant_tree)
        gate = asyncio.Semaphore(create_concurrency)

        async def create(i: int, tier: str) -> None:
            async with gate:
                await service.create("bench", CreateTenant(slug=f"{prefix}{i:05d}", name=f"Bench {i}",
                                                           tier=Tier(tier)))

        await asyncio.gather(*(create(i, "dedicated") for i in range(n)),
                             *(create(i, "shared") for i in range(n, n + shared)))
        catalog = await asyncpg.connect(stack.catalog_dsn)
        try:
            deadline = time.monotonic() + timeout
            while True:
                counts = dict(await catalog.fetch("SELECT status, count(*) FROM tenants GROUP BY status"))
                if counts.get("failed"):
                    raise RuntimeError(f"fleet build: {counts['failed']} tenants failed to provision")
                if counts.get("active", 0) >= n + shared:
                    break
                if worker_task.done():
                    worker_task.result()
                    raise RuntimeError("fleet build: the worker stopped")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fleet build: only {counts.get('active', 0)} of {n} tenants "
                                       f"active after {timeout:.0f} s")
                await asyncio.sleep(0.25)
            rows = await catalog.fetch(
                "SELECT t.id, t.slug, p.database_name, p.role_name, t.tier FROM tenants t "
                "JOIN placements p ON p.tenant_id = t.id WHERE t.status = 'active' ORDER BY t.slug")
        finally:
            await catalog.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker_task, 30)
        await engine.dispose()
    tenants = [Tenant(r["id"], r["slug"], r["database_name"], r["role_name"], r["tier"]) for r in rows]
    await _seed_shared(stack, tenants)
    return Fleet(tenants=tenants, build_seconds=time.monotonic() - started)
