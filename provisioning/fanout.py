"""Fleet migrations: every selected tenant to one revision, a canary wave first, then waves.

A run is a catalog row with one row per tenant (its wave, its state, its migrate operation). Each
tenant is migrated by an ordinary `migrate_tenant` operation, so the worker's rules hold: one
operation per tenant at a time, retries with backoff, restart after a crash, and concurrency
bounded per server. The coordinator (`advance_run`, called by workers in turn, one at a time per
run) moves the templates first, queues a wave, collects its outcome, and moves on when the current
wave is done. The canary wave always ends before anything else starts. With `halt_on_error`, each
wave starts only once the one before ended without a failure, and the run stops after a wave that
had one. Without it, the wave after the current one is queued at the same time (waves then only
order the work, since workers claim the oldest operations first), so workers do not idle while a
wave's last tenants finish. A rerun of the same target resumes: tenants already at the target are
done at once.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import msgspec

from contracts import locks
from contracts.channels import WAKE_CHANNEL
from migrations.tree import TenantTree
from provisioning import queue
from provisioning.claims import Claims
from provisioning.runner import describe
from provisioning.sealing import SecretBox
from provisioning.servers import SERVER_COLUMNS, ServerInfo
from provisioning.template import upgrade_template

log = logging.getLogger("tenantplane.fanout")

ELIGIBLE = ("active", "suspended", "maintenance")


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    target: str
    tenant_ids: list[uuid.UUID] | None = None  # None: every eligible tenant
    canary: int = 5
    wave_size: int = 50
    halt_on_error: bool = False


async def create_run(conn: asyncpg.Connection, spec: RunSpec) -> uuid.UUID:
    """Record a run and assign every selected tenant a wave (0 = canary), in one transaction."""
    run_id = uuid.uuid4()
    async with conn.transaction():
        if spec.tenant_ids is None:
            rows = await conn.fetch(
                "SELECT t.id FROM tenants t JOIN placements p ON p.tenant_id = t.id "
                "WHERE t.status = ANY($1::text[]) ORDER BY p.server_id, t.created_at", list(ELIGIBLE))
        else:
            rows = await conn.fetch(
                "SELECT t.id FROM tenants t JOIN placements p ON p.tenant_id = t.id "
                "WHERE t.id = ANY($1::uuid[]) AND t.status = ANY($2::text[]) ORDER BY p.server_id, t.created_at",
                spec.tenant_ids, list(ELIGIBLE))
        await conn.execute(
            "INSERT INTO migration_runs (id, target_revision, canary_size, wave_size, halt_on_error) "
            "VALUES ($1, $2, $3, $4, $5)", run_id, spec.target, spec.canary, spec.wave_size, spec.halt_on_error)
        waves = []
        for index, row in enumerate(rows):
            wave = 0 if index < spec.canary else 1 + (index - spec.canary) // max(spec.wave_size, 1)
            waves.append((run_id, row["id"], wave))
        await conn.executemany(
            "INSERT INTO migration_run_tenants (run_id, tenant_id, wave) VALUES ($1, $2, $3)", waves)
        await conn.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL)
    return run_id


async def _move_templates(catalog: Any, box: SecretBox, tree: TenantTree, target: str) -> None:
    servers = [ServerInfo(**dict(r)) for r in await catalog.fetch(
        f"SELECT {SERVER_COLUMNS} FROM database_servers WHERE status <> 'retired' ORDER BY name")]
    for server in servers:
        try:
            await upgrade_template(server, box, tree, target)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("template on %s not moved: %s", server.name, type(exc).__name__)


async def _queue_wave(conn: asyncpg.Connection, run: asyncpg.Record, wave: int) -> None:
    """The wave's pending tenants: those at the target already are done at once; the others get a
    `migrate_tenant` operation each, all in one transaction (a few statements for the whole wave).
    Workers are woken only when something was queued (by the statement that queues it)."""
    await conn.execute(
        "UPDATE migration_run_tenants rt SET state = 'succeeded', from_revision = p.tenant_revision, "
        "to_revision = p.tenant_revision, finished_at = now() FROM placements p "
        "WHERE p.tenant_id = rt.tenant_id AND rt.run_id = $1 AND rt.wave = $2 AND rt.state = 'pending' "
        "AND p.tenant_revision = $3", run["id"], wave, run["target_revision"])
    pending = await conn.fetch(
        "SELECT rt.tenant_id, p.tenant_revision FROM migration_run_tenants rt "
        "JOIN placements p ON p.tenant_id = rt.tenant_id "
        "WHERE rt.run_id = $1 AND rt.wave = $2 AND rt.state = 'pending'", run["id"], wave)
    if not pending:
        return
    # from_revision: what the catalog says the tenant is at; the step checks it on the server
    ops = [(queue.NewOperation(id=uuid.uuid4(), tenant_id=row["tenant_id"], params={
        "target": run["target_revision"], "run_id": str(run["id"]), "from_revision": row["tenant_revision"]}),
        row["tenant_revision"]) for row in pending]
    try:
        async with conn.transaction():
            await queue.enqueue_many(conn, "migrate_tenant", [op for op, _ in ops])
            await _mark_queued(conn, run["id"], ops)
    except asyncpg.UniqueViolationError:  # another operation is open for one of them: one by one
        for op in ops:
            await _queue_one(conn, run["id"], op)


async def _mark_queued(conn: asyncpg.Connection, run_id: uuid.UUID,
                       ops: list[tuple[queue.NewOperation, str | None]]) -> None:
    await conn.execute(
        "UPDATE migration_run_tenants rt SET state = 'queued', operation_id = u.op_id, from_revision = u.revision "
        "FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS u(op_id, tenant_id, revision) "
        "WHERE rt.run_id = $1 AND rt.tenant_id = u.tenant_id",
        run_id, [op.id for op, _ in ops], [op.tenant_id for op, _ in ops], [r for _, r in ops])


async def _queue_one(conn: asyncpg.Connection, run_id: uuid.UUID, op: tuple[queue.NewOperation, str | None]) -> None:
    try:
        async with conn.transaction():
            await queue.enqueue(conn, "migrate_tenant", op[0])
            await _mark_queued(conn, run_id, [op])
    except asyncpg.UniqueViolationError:
        await conn.execute(
            "UPDATE migration_run_tenants SET state = 'skipped', error = 'another operation was running', "
            "finished_at = now() WHERE run_id = $1 AND tenant_id = $2", run_id, op[0].tenant_id)


async def _collect(conn: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """The wave's tenants whose operations ended take their outcome."""
    await conn.execute(
        "UPDATE migration_run_tenants rt SET state = o.state, error = o.error, finished_at = o.finished_at, "
        "  to_revision = (SELECT tenant_revision FROM placements WHERE tenant_id = rt.tenant_id) "
        f"FROM ({queue.ENDED_OPERATIONS}) AS o "
        "WHERE rt.run_id = $1 AND rt.state = 'queued' AND o.id = rt.operation_id", run_id)


async def coordinate(catalog: Any, claims: Claims, box: SecretBox, tree: TenantTree) -> bool:
    """Advance every running run this worker can lock (one coordinator per run, the lock held by
    its claims connection); returns whether another worker held one."""
    held_elsewhere = False
    for row in await catalog.fetch("SELECT id FROM migration_runs WHERE state = 'running'"):
        name = str(row["id"])
        if not await claims.try_lock(locks.FLEET_RUN, name):
            held_elsewhere = True
            continue
        try:
            await advance_run(catalog, box, tree, row["id"])
        except Exception as exc:
            log.warning("fleet migration %s: %s", name, describe(exc))
        finally:
            await claims.unlock(locks.FLEET_RUN, name)
    return held_elsewhere


async def advance_run(catalog: Any, box: SecretBox, tree: TenantTree, run_id: uuid.UUID) -> str:
    """One coordination step; returns the run's state. Safe to call again at any time. A wave with
    nothing left open once queued (every tenant at the target already) is passed in the same call."""
    async with catalog.acquire() as conn:
        run = await conn.fetchrow("SELECT * FROM migration_runs WHERE id = $1", run_id)
        if run is None or run["state"] != "running":
            return run["state"] if run else "missing"
        wave = run["current_wave"]
        if wave == 0 and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM migration_run_tenants WHERE run_id = $1 AND state <> 'pending')", run_id):
            await _move_templates(conn, box, tree, run["target_revision"])
        while True:
            await _queue_wave(conn, run, wave)
            if wave > 0 and not run["halt_on_error"]:
                # the next wave too: waves then only order the work (oldest operations are claimed
                # first), and workers never sit idle beside a wave's last few tenants
                ahead = await conn.fetchval(
                    "SELECT min(wave) FROM migration_run_tenants WHERE run_id = $1 AND wave > $2", run_id, wave)
                if ahead is not None:
                    await _queue_wave(conn, run, ahead)
            await _collect(conn, run_id)
            open_here = await conn.fetchval(
                "SELECT count(*) FROM migration_run_tenants WHERE run_id = $1 AND wave = $2 "
                "AND state IN ('pending', 'queued')", run_id, wave)
            if open_here:
                return "running"
            failed = await conn.fetchval(
                "SELECT count(*) FROM migration_run_tenants WHERE run_id = $1 AND state = 'failed'", run_id)
            if failed and run["halt_on_error"]:
                await conn.execute("UPDATE migration_runs SET state = 'halted', finished_at = now(), "
                                   "error = $2 WHERE id = $1", run_id, f"{failed} tenant(s) failed in wave {wave}")
                return "halted"
            later = await conn.fetchval(
                "SELECT min(wave) FROM migration_run_tenants WHERE run_id = $1 AND wave > $2", run_id, wave)
            if later is None:
                break
            await conn.execute("UPDATE migration_runs SET current_wave = $2 WHERE id = $1", run_id, later)
            wave = later
        state = "failed" if failed else "succeeded"
        await conn.execute("UPDATE migration_runs SET state = $2, finished_at = now() WHERE id = $1", run_id, state)
        return state
