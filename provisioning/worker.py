"""The provisioning worker: runs queued operations, one writer per tenant, restartable at any point.

The queue is the `operations` table itself, so an operation is enqueued in the same transaction
as the catalog change that asks for it. A worker claims an operation by taking a session-level
advisory lock on a connection of its own; if the worker dies, PostgreSQL drops the connection and
the lock with it, and the next worker to look (a restarted one included) resumes the operation at
its first step not recorded as done. Steps check before they act, so a step cut off half-way is
simply run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from typing import Any

import asyncpg
import msgspec

from provisioning.context import StepContext
from provisioning.pipelines import WAKE_CHANNEL, Pipeline, pipeline_for
from provisioning.sealing import SecretBox
from provisioning.servers import AdminSessions
from tenant_router.invalidation import announce_placement_change

log = logging.getLogger("tenantplane.worker")

_LOCK_CLASS = 0x7470  # first key of the two-key advisory lock: "tp"


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    catalog_dsn: str
    secret_key: str
    redis_url: str | None = None
    poll_interval: float = 0.5
    concurrency: int = 4
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    reconcile_interval_seconds: float = 600.0  # the scheduled reconciler; 0 turns it off
    spare_databases: int = 2  # spare template copies kept per server (spares.py); 0 turns it off
    pause_before_step: str | None = None  # test hook ("<step>", "after:<step>", "finish"); off unless set


def describe(exc: BaseException) -> str:
    """An error message for the operation record: the type and message, never a DSN or password
    (our steps never put either in an exception, and asyncpg's messages do not carry them)."""
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.box = SecretBox(config.secret_key)
        self._catalog: asyncpg.Pool | None = None
        self._redis: Any = None
        self._wake = asyncio.Event()
        self._running: dict[uuid.UUID, uuid.UUID | None] = {}  # operation → its server
        self._tasks: set[asyncio.Task] = set()
        self._spares_wanted = asyncio.Event()  # set after this worker claimed a spare
        self._admin_sessions = AdminSessions(self.box)  # admin sessions kept between operations

    async def announce(self, tenant_id: uuid.UUID) -> None:
        """Tell every router that this tenant's placement changed (best effort: TTLs back it up)."""
        await announce_placement_change(self._redis, tenant_id)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self._catalog = await asyncpg.create_pool(cfg.catalog_dsn, min_size=1, max_size=cfg.concurrency + 2)
        if cfg.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(cfg.redis_url)
        listener = await asyncpg.connect(cfg.catalog_dsn)
        await listener.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
        log.info("worker started (concurrency %d)", cfg.concurrency)
        if cfg.reconcile_interval_seconds > 0:
            self._spawn(self._reconcile_periodically(cfg.reconcile_interval_seconds))
        if cfg.spare_databases > 0:
            from provisioning.spares import keep_spares

            self._spawn(keep_spares(self._catalog, self.box, cfg.spare_databases, self._spares_wanted))
        try:
            while not stop.is_set():
                await self._dispatch()
                await self._coordinate_fleet_migrations()
                self._wake.clear()
                waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waiters, timeout=cfg.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await listener.close()
            await self._admin_sessions.close()
            await self._catalog.close()
            if self._redis is not None:
                await self._redis.aclose()

    async def _coordinate_fleet_migrations(self) -> None:
        """Advance every running fleet migration this worker can lock (one coordinator per run)."""
        from provisioning.fanout import advance_run

        runs = await self._catalog.fetch("SELECT id FROM migration_runs WHERE state = 'running'")
        for row in runs:
            async with self._catalog.acquire() as lock_conn:
                if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))",
                                                _LOCK_CLASS + 2, str(row["id"])):
                    continue
                try:
                    await advance_run(self._catalog, self.box, row["id"])
                except Exception as exc:
                    log.warning("fleet migration %s: %s", row["id"], describe(exc))
                finally:
                    await lock_conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))",
                                            _LOCK_CLASS + 2, str(row["id"]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile_periodically(self, interval: float) -> None:
        """One worker at a time (an advisory lock) compares the catalog with the servers."""
        from provisioning.reconcile import reconcile_and_store

        while True:
            await asyncio.sleep(interval)
            try:
                conn = await asyncpg.connect(self.config.catalog_dsn)
                try:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1, 0)", _LOCK_CLASS + 1):
                        report = await reconcile_and_store(self._catalog, self.box)
                        if report.findings or report.unreachable:
                            log.warning("reconciler: %d findings, unreachable: %s", len(report.findings),
                                        ", ".join(report.unreachable) or "none")
                finally:
                    await conn.close()
            except Exception as exc:
                log.warning("reconciler failed: %s", describe(exc))

    async def _dispatch(self) -> None:
        """Start the due operations this worker has room for, at most a server's share at once
        on each server (a tenth of its connection capacity: migrations and copies take
        connections from the same budget the routers use)."""
        free = self.config.concurrency - len(self._running)
        if free <= 0:
            return
        rows = await self._catalog.fetch(
            "SELECT o.id, p.server_id, coalesce(s.capacity_connections, 100) AS capacity "
            "FROM operations o LEFT JOIN placements p ON p.tenant_id = o.tenant_id "
            "LEFT JOIN database_servers s ON s.id = p.server_id "
            "WHERE o.state IN ('queued', 'running') AND o.next_attempt_at <= now() "
            # not the ones another worker holds (its claim lock): trying them costs a connection each
            "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
            "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "  AND l.classid = $2 AND l.objsubid = 2 "
            "  AND l.objid = (hashtext(o.id::text)::bigint & 4294967295)::oid) "
            "ORDER BY o.created_at LIMIT $1",
            free + len(self._running) + 50, _LOCK_CLASS,
        )
        for row in rows:
            op_id, server_id = row["id"], row["server_id"]
            if op_id in self._running or len(self._running) >= self.config.concurrency:
                continue
            busy_here = sum(1 for s in self._running.values() if s == server_id and s is not None)
            if server_id is not None and busy_here >= max(1, row["capacity"] // 10):
                continue
            self._running[op_id] = server_id
            task = asyncio.create_task(self._claim_and_run(op_id))
            self._tasks.add(task)
            task.add_done_callback(lambda t, op_id=op_id: (self._tasks.discard(t), self._running.pop(op_id, None),
                                                           self._wake.set()))

    async def _claim_and_run(self, op_id: uuid.UUID) -> None:
        lock_conn = await asyncpg.connect(self.config.catalog_dsn)
        try:
            claimed = await lock_conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_CLASS, str(op_id))
            if not claimed:
                return  # another worker has it
            op = await self._catalog.fetchrow(
                "SELECT id, kind, tenant_id, params FROM operations "
                "WHERE id = $1 AND state IN ('queued', 'running') AND next_attempt_at <= now()",
                op_id,
            )
            if op is not None:
                await self.execute(op)
        except Exception:
            log.exception("operation %s: unexpected worker error", op_id)
        finally:
            with contextlib.suppress(Exception):
                await lock_conn.close()

    async def execute(self, op: asyncpg.Record) -> None:
        catalog = self._catalog
        tier = await catalog.fetchval("SELECT tier FROM tenants WHERE id = $1", op["tenant_id"])
        pipeline: Pipeline = pipeline_for(op["kind"], tier)
        params = op["params"]
        if isinstance(params, str):
            params = msgspec.json.decode(params)
        ctx = StepContext(
            operation_id=op["id"], tenant_id=op["tenant_id"], params=params or {}, catalog=catalog,
            secret_key=self.config.secret_key, box=self.box, announce=self.announce, tier=tier,
            sessions=self._admin_sessions,
        )
        try:
            await self._run(op, pipeline, ctx)
        finally:
            await ctx.close()  # the admin sessions its steps shared
            if ctx.spare_claimed:
                self._spares_wanted.set()

    async def _run(self, op: asyncpg.Record, pipeline: Pipeline, ctx: StepContext) -> None:
        catalog = self._catalog
        async with catalog.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE operations SET state = 'running', started_at = coalesce(started_at, now()) "
                "WHERE id = $1", op["id"])
            await conn.executemany(
                "INSERT INTO operation_steps (operation_id, position, name) VALUES ($1, $2, $3) "
                "ON CONFLICT (operation_id, position) DO NOTHING",
                [(op["id"], i, name) for i, name in enumerate(pipeline.step_names)],
            )
        done = {r["position"] for r in await catalog.fetch(
            "SELECT position FROM operation_steps WHERE operation_id = $1 AND state = 'succeeded'", op["id"])}
        for position, step in enumerate(pipeline.steps):
            if position in done:
                continue
            attempts = await catalog.fetchval(
                "UPDATE operation_steps SET state = 'running', attempts = attempts + 1, started_at = now() "
                "WHERE operation_id = $1 AND position = $2 RETURNING attempts",
                op["id"], position,
            )
            if self.config.pause_before_step == step.__name__:
                await self._pause(step.__name__, op["id"])
            try:
                await step(ctx)
            except Exception as exc:
                await self._step_failed(ctx, pipeline, position, attempts, exc)
                return
            if self.config.pause_before_step == f"after:{step.__name__}":
                # effect done, not yet recorded: the rerun must find it and carry on
                await self._pause(f"after:{step.__name__}", op["id"])
            await catalog.execute(
                "UPDATE operation_steps SET state = 'succeeded', error = NULL, finished_at = now() "
                "WHERE operation_id = $1 AND position = $2",
                op["id"], position,
            )
        if self.config.pause_before_step == "finish":
            await self._pause("finish", op["id"])
        async with catalog.acquire() as conn, conn.transaction():
            await pipeline.finish(conn, ctx)
            await conn.execute(
                "UPDATE operations SET state = 'succeeded', error = NULL, finished_at = now() WHERE id = $1",
                op["id"])
        await self.announce(ctx.tenant_id)
        log.info("operation %s (%s) succeeded for tenant %s", op["id"], op["kind"], ctx.tenant_id)

    async def _step_failed(self, ctx: StepContext, pipeline: Pipeline, position: int, attempts: int,
                           exc: Exception) -> None:
        error = describe(exc)
        final = attempts >= self.config.max_attempts
        log.warning("operation %s step %d failed (attempt %d%s): %s", ctx.operation_id, position, attempts,
                    ", giving up" if final else "", error)
        async with self._catalog.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE operation_steps SET state = $3, error = $4, finished_at = now() "
                "WHERE operation_id = $1 AND position = $2",
                ctx.operation_id, position, "failed" if final else "pending", error,
            )
            if final:
                await conn.execute(
                    "UPDATE operations SET state = 'failed', error = $2, finished_at = now() WHERE id = $1",
                    ctx.operation_id, error)
                await pipeline.fail(conn, ctx)
            else:
                delay = self.config.retry_base_seconds * (2 ** (attempts - 1))
                await conn.execute(
                    "UPDATE operations SET error = $2, next_attempt_at = now() + make_interval(secs => $3) "
                    "WHERE id = $1",
                    ctx.operation_id, error, delay)
        if final:
            for undo in pipeline.undo:
                try:
                    await undo(ctx)
                except Exception as undo_exc:  # the reconciler will report what is left
                    log.warning("operation %s: undo %s failed: %s", ctx.operation_id, undo.__name__,
                                describe(undo_exc))
            await self.announce(ctx.tenant_id)

    async def _pause(self, step: str, op_id: uuid.UUID) -> None:
        # Test hook only (TENANTPLANE_TEST_PAUSE_BEFORE_STEP): announce and block, so a test can
        # SIGKILL this process at a known step boundary.
        print(f"PAUSED before {step} operation={op_id}", file=sys.stdout, flush=True)
        await asyncio.Event().wait()
