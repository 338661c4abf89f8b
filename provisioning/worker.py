"""The provisioning worker: runs queued operations, one writer per tenant, restartable at any point.

The queue is the `operations` table itself, so an operation is enqueued in the same transaction
as the catalog change that asks for it. A worker claims operations by taking session-level advisory
locks on a catalog connection of its own (its claims connection: several claims in one query, each
released when its operation ends); if the worker dies, PostgreSQL drops the connection and the locks
with it, and the next worker to look (a restarted one included) resumes each operation at its first
step not recorded as done. Steps check before they act, so a step cut off half-way is simply run
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import uuid
from typing import Any

import asyncpg
import msgspec

from contracts import locks
from contracts.channels import OPERATION_DONE_CHANNEL, WAKE_CHANNEL
from provisioning.announcements import BatchedAnnouncements
from provisioning.context import StepContext
from provisioning.pipelines import Pipeline, pipeline_for
from provisioning.scram import remember_salted_passwords
from provisioning.sealing import SecretBox
from provisioning.servers import SERVER_COLUMNS, AdminSessions, ServerInfo
from provisioning.steps.catalog import CatalogChange

log = logging.getLogger("tenantplane.worker")

_LOCK_CLASS = locks.OPERATION
_SERVER_COLUMNS = [c.strip() for c in SERVER_COLUMNS.split(",")]
_SERVER_FIELDS = ", ".join(f"s.{c} AS srv_{c}" for c in _SERVER_COLUMNS)

# The claimed operations still due, with what running them needs, started in the same statement:
# running, their steps recorded once (the first one inserted running; $2 maps "kind/tier" to the
# pipeline's step names) or, when they exist already, the first one not done marked running (steps
# succeed in order, so every step before it is done). A data-modifying CTE cannot see rows another
# one inserts, so for each operation exactly one of `inserted` and `resumed` has its first step.
_START_CLAIMED = (
    f"WITH due AS (SELECT o.id, o.kind, o.tenant_id, o.params, t.tier, p.server_id, {_SERVER_FIELDS} "
    "  FROM operations o JOIN tenants t ON t.id = o.tenant_id "
    "  LEFT JOIN placements p ON p.tenant_id = o.tenant_id LEFT JOIN database_servers s ON s.id = p.server_id "
    "  WHERE o.id = ANY($1::uuid[]) AND o.state IN ('queued', 'running') AND o.next_attempt_at <= now()), "
    "started AS (UPDATE operations o SET state = 'running', started_at = coalesce(o.started_at, now()) "
    "  FROM due WHERE o.id = due.id), "
    "inserted AS (INSERT INTO operation_steps (operation_id, position, name, state, attempts, started_at) "
    "  SELECT due.id, s.ord - 1, s.name, CASE WHEN s.ord = 1 THEN 'running' ELSE 'pending' END, "
    "    CASE WHEN s.ord = 1 THEN 1 ELSE 0 END, CASE WHEN s.ord = 1 THEN now() END "
    "  FROM due, jsonb_array_elements_text($2::jsonb -> (due.kind || '/' || due.tier)) WITH ORDINALITY AS s(name, ord) "
    "  ON CONFLICT (operation_id, position) DO NOTHING RETURNING operation_id, position, attempts), "
    "resumed AS (UPDATE operation_steps st SET state = 'running', attempts = st.attempts + 1, started_at = now() "
    "  FROM (SELECT operation_id, min(position) AS position FROM operation_steps "
    "    WHERE operation_id IN (SELECT id FROM due) AND state <> 'succeeded' GROUP BY operation_id) AS first "
    "  WHERE st.operation_id = first.operation_id AND st.position = first.position "
    "  RETURNING st.operation_id, st.position, st.attempts) "
    "SELECT due.*, coalesce(i.position, r.position) AS first_step, coalesce(i.attempts, r.attempts) AS attempts "
    "FROM due LEFT JOIN inserted i ON i.operation_id = due.id AND i.position = 0 "
    "LEFT JOIN resumed r ON r.operation_id = due.id")


@functools.cache
def _pipeline_steps() -> str:
    """"kind/tier" -> the pipeline's step names, as JSON for _START_CLAIMED."""
    from provisioning.pipelines import PIPELINES

    return msgspec.json.encode({f"{kind}/{tier}": p.step_names for (kind, tier), p in PIPELINES.items()}).decode()


# a step boundary: the step before (position $2; -1 for none) succeeded and the next ($3) running
_NEXT_STEP = (
    "WITH done AS (UPDATE operation_steps SET state = 'succeeded', error = NULL, finished_at = now() "
    "  WHERE operation_id = $1 AND position = $2) "
    "UPDATE operation_steps SET state = 'running', attempts = attempts + 1, started_at = now() "
    "WHERE operation_id = $1 AND position = $3 RETURNING attempts")


# The claim, on the claims connection, in one query: release the claims of operations that ended
# here ($3), then walk the due operations oldest first -- not those this worker runs or just ended
# ($2), nor those on servers where it runs its share already ($6) -- taking the advisory lock of
# each until $1 are held. A lock another worker holds is simply not had (pg_try_advisory_lock), so
# no look at pg_locks is needed; the outer LIMIT stops the walk (and the locking) at $1. Volatile
# quals are never pushed into a subquery, so only rows the walk reaches are locked. The window ($5)
# bounds the walk; operations held by other workers take up at most their concurrency of it.
_CLAIM = (
    "WITH released AS MATERIALIZED (SELECT count(pg_advisory_unlock($4, hashtext(r::text))) AS n "
    "  FROM unnest($3::uuid[]) AS r) "
    "SELECT c.id, c.server_id, c.capacity FROM released, ("
    "  SELECT o.id, p.server_id, coalesce(s.capacity_connections, 100) AS capacity FROM operations o "
    "  LEFT JOIN placements p ON p.tenant_id = o.tenant_id LEFT JOIN database_servers s ON s.id = p.server_id "
    "  WHERE o.state IN ('queued', 'running') AND o.next_attempt_at <= now() AND o.id <> ALL($2::uuid[]) "
    "    AND (p.server_id IS NULL OR p.server_id <> ALL($6::uuid[])) "
    "  ORDER BY o.created_at LIMIT $5) AS c "
    "WHERE released.n >= 0 AND pg_try_advisory_lock($4, hashtext(c.id::text)) LIMIT $1")
CLAIM_WINDOW = 200


@functools.cache
def finished_statement(finish: CatalogChange) -> str:
    """The end of an operation as one statement (atomic on its own): its last step ($2) and the
    operation ($1) succeeded, the pipeline's catalog change for the tenant ($3), and a notification
    for whoever waits on the operation (heard at commit)."""
    clauses = [*finish.clauses,
               "step AS (UPDATE operation_steps SET state = 'succeeded', error = NULL, finished_at = now() "
               "  WHERE operation_id = $1 AND position = $2)",
               "op AS (UPDATE operations SET state = 'succeeded', error = NULL, finished_at = now() WHERE id = $1)"]
    return (f"WITH {', '.join(clauses)} SELECT pg_notify('{OPERATION_DONE_CHANNEL}', $1::text) "
            "WHERE $3::uuid IS NOT NULL")
COORDINATE_EVERY = 0.5  # seconds between fleet-migration coordination steps of a busy worker


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The catalog pool's reset: nothing beyond asyncpg's own rollback of an open transaction. The
    pool's connections never carry session state (no SET, LISTEN or session advisory lock: claims
    live on the claims connection), so the default reset query, a round trip on every release,
    would buy nothing."""


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
        self._claims: asyncpg.Connection | None = None  # holds this worker's session advisory locks
        self._claims_lock = asyncio.Lock()
        self._redis: Any = None
        self._announcements: BatchedAnnouncements | None = None
        self._wake = asyncio.Event()
        self._running: dict[uuid.UUID, uuid.UUID | None] = {}  # operation → its server
        self._tasks: set[asyncio.Task] = set()
        self._spares_wanted = asyncio.Event()  # set after this worker claimed a spare
        self._admin_sessions = AdminSessions(self.box)  # admin sessions kept between operations
        self._coordinated_at = 0.0
        self._finished: list[uuid.UUID] = []  # operations that ended here, claims not yet released
        self._shares: dict[uuid.UUID, int] = {}  # server -> operations this worker runs there at most

    async def announce(self, tenant_id: uuid.UUID) -> None:
        """Tell every router that this tenant's placement changed (best effort: TTLs back it up);
        announcements of operations that end together go out in one Redis round trip."""
        if self._announcements is not None:
            await self._announcements.announce(tenant_id)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        remember_salted_passwords()  # one PBKDF2 per role, not per connection (a fan-out opens many)
        self._catalog = await asyncpg.create_pool(cfg.catalog_dsn, min_size=1, max_size=cfg.concurrency + 2,
                                                  reset=_keep_session)
        self._claims = await asyncpg.connect(cfg.catalog_dsn)
        if cfg.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(cfg.redis_url)
            self._announcements = BatchedAnnouncements(self._redis)
        listener = await asyncpg.connect(cfg.catalog_dsn)
        await listener.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
        log.info("worker started (concurrency %d)", cfg.concurrency)
        if cfg.reconcile_interval_seconds > 0:
            self._spawn(self._reconcile_periodically(cfg.reconcile_interval_seconds))
        from provisioning.steps.upgrades import render_newest_ahead

        self._spawn(render_newest_ahead())
        if cfg.spare_databases > 0:
            from provisioning.spares import keep_spares

            self._spawn(keep_spares(self._catalog, self.box, cfg.spare_databases, self._spares_wanted))
        try:
            while not stop.is_set():
                # cleared before the work, not after it: a wake-up that arrives meanwhile (an
                # operation ended, a NOTIFY of operations just queued) starts the next round at once
                self._wake.clear()
                await self._dispatch()
                await self._coordinate_fleet_migrations()
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
            await self._claims.close()
            await self._catalog.close()
            if self._announcements is not None:
                await self._announcements.aclose()
            if self._redis is not None:
                await self._redis.aclose()

    async def _on_claims(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """A query on the claims connection (one at a time). Should that connection have been lost,
        so have its locks; a new one is opened for the claims to come."""
        async with self._claims_lock:
            if self._claims is None or self._claims.is_closed():
                self._claims = await asyncpg.connect(self.config.catalog_dsn)
            return await self._claims.fetch(query, *args)

    async def _coordinate_fleet_migrations(self) -> None:
        """Advance every running fleet migration this worker can lock (one coordinator per run).
        While this worker still runs operations it does so at most every COORDINATE_EVERY seconds
        (each call costs a few catalog queries; a wave ends when the workers fall idle)."""
        from provisioning.fanout import advance_run

        now = asyncio.get_running_loop().time()
        if self._running and now - self._coordinated_at < COORDINATE_EVERY:
            return
        self._coordinated_at = now
        runs = await self._catalog.fetch("SELECT id FROM migration_runs WHERE state = 'running'")
        for row in runs:
            key = (locks.FLEET_RUN, str(row["id"]))
            if not (await self._on_claims("SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok", *key))[0]["ok"]:
                # another worker is coordinating it and may have looked before our last operation
                # ended: look again soon rather than at the next poll
                asyncio.get_running_loop().call_later(0.05, self._wake.set)
                continue
            try:
                await advance_run(self._catalog, self.box, row["id"])
            except Exception as exc:
                log.warning("fleet migration %s: %s", row["id"], describe(exc))
            finally:
                await self._on_claims("SELECT pg_advisory_unlock($1, hashtext($2))", *key)

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
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1, 0)", locks.RECONCILER):
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
        connections from the same budget the routers use). Two queries: the claim (see _CLAIM),
        then the claimed operations read (_read_claimed)."""
        free = self.config.concurrency - len(self._running)
        released, self._finished = self._finished, []
        if free <= 0:
            if released:
                await self._release(released)
            return
        busy: dict[uuid.UUID, int] = {}
        for server_id in self._running.values():
            if server_id is not None:
                busy[server_id] = busy.get(server_id, 0) + 1
        chosen: list[uuid.UUID] = []
        over: list[uuid.UUID] = []
        ended = released  # not taken back in this round, whoever else could have them
        for _ in range(3):  # again only when one claim took more on a server than its share
            full = [server_id for server_id, n in busy.items() if n >= self._server_share(server_id)]
            try:
                claimed = await self._on_claims(_CLAIM, free - len(chosen), [*self._running, *ended, *over],
                                                released, _LOCK_CLASS, free + CLAIM_WINDOW, full)
            except Exception as exc:
                log.warning("claiming operations failed: %s", describe(exc))
                self._finished += released  # their claims are let go next round
                break
            released = []
            extra = []
            for row in claimed:
                server_id = row["server_id"]
                if server_id is not None:
                    self._shares[server_id] = max(1, row["capacity"] // 10)
                    if busy.get(server_id, 0) >= self._shares[server_id]:
                        extra.append(row["id"])  # goes back
                        continue
                    busy[server_id] = busy.get(server_id, 0) + 1
                self._running[row["id"]] = server_id  # reserved; released below unless still due
                chosen.append(row["id"])
            over += extra
            if not extra or len(chosen) >= free:
                break
        try:
            if over:
                await self._release(over)
            ops = await self._read_claimed(chosen) if chosen else []
        except Exception as exc:
            log.warning("reading claimed operations failed: %s", describe(exc))
            with contextlib.suppress(Exception):  # not run: let another worker (or the next round) have them
                await self._release(chosen)
            ops = []
        for op_id in set(chosen) - {op["id"] for op, _ in ops}:
            self._running.pop(op_id, None)
        for op, server in ops:
            task = asyncio.create_task(self._run_claimed(op, server))
            self._tasks.add(task)
            task.add_done_callback(lambda t, op_id=op["id"]: (self._tasks.discard(t), self._running.pop(op_id, None),
                                                              self._wake.set()))

    def _server_share(self, server_id: uuid.UUID) -> int:
        return self._shares.get(server_id, 1_000_000)

    async def _read_claimed(self, claimed: list[uuid.UUID]) -> list[tuple[asyncpg.Record, ServerInfo | None]]:
        """Read the claimed operations that are still due -- read after the claim, so a finish by a
        worker that held one just before is seen -- with what running them needs (tier, server),
        and start them, in one statement (_START_CLAIMED); release the claims on the rest. The
        server is the one the tenant's placement names now: only the claimed operation itself can
        change that placement (one open operation per tenant), as a step of its own."""
        ops = await self._catalog.fetch(_START_CLAIMED, claimed, _pipeline_steps())
        stale = list(set(claimed) - {op["id"] for op in ops})
        if stale:
            await self._release(stale)
        return [(op, ServerInfo(**{c: op[f"srv_{c}"] for c in _SERVER_COLUMNS}) if op["srv_id"] else None)
                for op in ops]

    async def _release(self, op_ids: list[uuid.UUID]) -> None:
        await self._on_claims("SELECT pg_advisory_unlock($1, hashtext(id::text)) FROM unnest($2::uuid[]) AS id",
                              _LOCK_CLASS, op_ids)

    async def _run_claimed(self, op: asyncpg.Record, server: ServerInfo | None) -> None:
        try:
            await self.execute(op, server)
        except Exception:
            log.exception("operation %s: unexpected worker error", op["id"])
        finally:
            # released by the next round's claim query (the task's end wakes the loop for it)
            self._finished.append(op["id"])

    async def execute(self, op: asyncpg.Record, server: ServerInfo | None = None) -> None:
        """Run `op` (claimed) from its first step not yet done; `op` carries the tenant's `tier`
        and `server` is where its placement points (None: the first step that needs it asks)."""
        catalog = self._catalog
        pipeline: Pipeline = pipeline_for(op["kind"], op["tier"])
        params = op["params"]
        if isinstance(params, str):
            params = msgspec.json.decode(params)
        ctx = StepContext(
            operation_id=op["id"], tenant_id=op["tenant_id"], params=params or {}, catalog=catalog,
            secret_key=self.config.secret_key, box=self.box, announce=self.announce, tier=op["tier"],
            sessions=self._admin_sessions, _server=server,
        )
        try:
            await self._run(op, pipeline, ctx)
        finally:
            await ctx.close()  # the admin sessions its steps shared
            if ctx.spare_claimed:
                self._spares_wanted.set()

    async def _run(self, op: asyncpg.Record, pipeline: Pipeline, ctx: StepContext) -> None:
        catalog = self._catalog
        # started when it was read (_START_CLAIMED): its first step not done is running already
        first = op["first_step"] if op["first_step"] is not None else len(pipeline.steps)
        attempts = op["attempts"] or 0
        previous = -1  # the step that ran just before, recorded as succeeded with the next one's start
        for position in range(first, len(pipeline.steps)):
            step = pipeline.steps[position]
            if position != first:
                attempts = await catalog.fetchval(_NEXT_STEP, op["id"], previous, position)
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
            previous = position
        if self.config.pause_before_step == "finish":
            await self._pause("finish", op["id"])
        # the last step, the finish's catalog change and the operation, in one statement
        await catalog.execute(finished_statement(pipeline.finish), op["id"], previous, ctx.tenant_id)
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
                await conn.execute("SELECT pg_notify($1, $2)", OPERATION_DONE_CHANNEL, str(ctx.operation_id))
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
