"""Running one claimed operation: its steps in order from the first one not done, each boundary
recorded in one statement, the end (or a failed step) recorded with the pipeline's catalog change.
Steps check before they act, so a step cut off half-way by a crash is simply run again."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from provisioning import queue
from provisioning.backups.kit import BackupKit, open_kit
from provisioning.config import WorkerConfig
from provisioning.context import StepContext
from provisioning.erasure_stripe import StripeCustomers
from provisioning.metrics import WorkerMetrics
from provisioning.pipelines import BACKUP_KINDS, Pipeline, pipeline_for
from provisioning.sealing import SecretBox
from provisioning.servers import AdminSessions

log = logging.getLogger("tenantplane.worker")


def describe(exc: BaseException) -> str:
    """An error message for the operation record: the type and message, never a DSN or password
    (our steps never put either in an exception, and asyncpg's messages do not carry them)."""
    text = str(exc).strip() or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:2000]


@functools.cache
def step_names() -> str:
    """"kind/tier" -> the pipeline's step names, as JSON for queue.start_claimed."""
    from provisioning.pipelines import PIPELINES

    return msgspec.json.encode({f"{kind}/{tier}": p.step_names for (kind, tier), p in PIPELINES.items()}).decode()


class Runner:
    def __init__(self, config: WorkerConfig, catalog: asyncpg.Pool, box: SecretBox,
                 announce: Callable[..., Awaitable[None]], sessions: AdminSessions,
                 spares_wanted: asyncio.Event, metrics: WorkerMetrics | None = None,
                 customers: StripeCustomers | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.box = box
        self.announce = announce
        self.sessions = sessions  # admin sessions kept between operations
        self.spares_wanted = spares_wanted  # set after an operation claimed a spare database
        self._backups: BackupKit | None = None
        self.metrics = metrics  # durations, failures, retries (provisioning/metrics.py)
        self.customers = customers  # erasure's Stripe customers (erasure_stripe.py); None: no STRIPE_API_KEY

    def backups(self) -> BackupKit:
        """The store and keys, opened when the first backup or restore runs (not at start: a
        worker that never backs up needs neither a store nor a master key)."""
        if self._backups is None:
            self._backups = open_kit(self.config, self.catalog)
        return self._backups

    def _backs_up_first(self, kind: str) -> bool:
        """BACKUP_BEFORE_MOVE / BACKUP_BEFORE_DELETE: the move or delete takes a backup first."""
        return (kind == "move_tenant" and self.config.backup_before_move) or \
            (kind == "delete_tenant" and self.config.backup_before_delete)

    async def execute(self, op: queue.Started) -> None:
        """Run `op` (claimed and started) from its first step not yet done; `op.server` is where its
        placement points (None: the first step that needs it asks)."""
        pipeline: Pipeline = pipeline_for(op.kind, op.tier)
        ctx = StepContext(
            operation_id=op.id, tenant_id=op.tenant_id, params=op.params, catalog=self.catalog,
            secret_key=self.config.secret_key, box=self.box, announce=self.announce, tier=op.tier,
            sessions=self.sessions, _server=op.server, redis_url=self.config.redis_url,
            backups=self.backups() if op.kind in BACKUP_KINDS or self._backs_up_first(op.kind) else None,
            customers=self.customers, tenant_tree=self.config.tenant_tree,
        )
        try:
            await self._run(op, pipeline, ctx)
        finally:
            await ctx.close()  # the admin sessions its steps shared
            if ctx.spare_claimed:
                self.spares_wanted.set()

    async def _run(self, op: queue.Started, pipeline: Pipeline, ctx: StepContext) -> None:
        pause = self.config.pause_before_step
        # started when it was claimed (queue.start_claimed): its first step not done is running already
        first = op.first_step if op.first_step is not None else len(pipeline.steps)
        attempts = op.attempts
        cancelled = op.cancel_requested
        previous = -1  # the step that ran just before, recorded as succeeded with the next one's start
        started = time.monotonic()
        for position in range(first, len(pipeline.steps)):
            step = pipeline.steps[position]
            if position != first:
                attempts, cancelled = await queue.advance(self.catalog, op.id, previous, position)
            if cancelled:  # a step boundary: end it here, as a final failure would (undo included)
                log.info("operation %s (%s) cancelled before step %s", op.id, op.kind, step.__name__)
                await self._give_up(ctx, pipeline, position, queue.CANCELLED, op.kind, started)
                return
            if pause == step.__name__:
                await self._pause(step.__name__, op.id)
            began = time.monotonic()
            try:
                await step(ctx)
            except Exception as exc:
                self._observe_step(op.kind, step.__name__, "failed", began)
                await self._step_failed(ctx, pipeline, position, attempts, exc, op.kind, started)
                return
            self._observe_step(op.kind, step.__name__, "succeeded", began)
            if pause == f"after:{step.__name__}":
                # effect done, not yet recorded: the rerun must find it and carry on
                await self._pause(f"after:{step.__name__}", op.id)
            previous = position
        if pause == "finish":
            await self._pause("finish", op.id)
        # the last step, the finish's catalog change and the operation, in one statement
        # with Redis, the announcement's outbox row commits with the end: a worker killed before it
        # is sent leaves it for the others
        noted_ok = bool(self.config.redis_url)
        if pipeline.then is None:
            noted = await queue.finish(self.catalog, op.id, previous, ctx.tenant_id, pipeline.finish,
                                       noted=noted_ok)
        else:  # and what follows it (an erasure asked with the delete), in the same transaction
            async with self.catalog.acquire() as conn, conn.transaction():
                noted = await queue.finish(conn, op.id, previous, ctx.tenant_id, pipeline.finish, noted=noted_ok)
                await pipeline.then(conn, ctx)
        if self.metrics is not None:
            self.metrics.operation_seconds.labels(op.kind, "succeeded").observe(time.monotonic() - started)
        if pause == "after:finish":  # committed, not yet announced: the outbox row must carry it
            await self._pause("after:finish", op.id)
        await self.announce(ctx.tenant_id, () if noted is None else (noted,))
        log.info("operation %s (%s) succeeded for tenant %s", op.id, op.kind, ctx.tenant_id)

    def _observe_step(self, kind: str, step: str, outcome: str, began: float) -> None:
        if self.metrics is not None:
            self.metrics.step_seconds.labels(kind, step, outcome).observe(time.monotonic() - began)

    async def _step_failed(self, ctx: StepContext, pipeline: Pipeline, position: int, attempts: int,
                           exc: Exception, kind: str, started: float) -> None:
        error = describe(exc)
        final = attempts >= self.config.max_attempts
        log.warning("operation %s step %d failed (attempt %d%s): %s", ctx.operation_id, position, attempts,
                    ", giving up" if final else "", error)
        if not final:
            delay = self.config.retry_base_seconds * (2 ** (attempts - 1))
            await queue.retry_later(self.catalog, ctx.operation_id, position, error, delay)
            if self.metrics is not None:
                self.metrics.retries.labels(kind, pipeline.steps[position].__name__).inc()
            return
        await self._give_up(ctx, pipeline, position, error, kind, started)

    async def _give_up(self, ctx: StepContext, pipeline: Pipeline, position: int, error: str, kind: str,
                       started: float) -> None:
        """The operation failed for good at `position` (or was cancelled there): recorded with the
        pipeline's failure in one transaction, then the pipeline's undo, best effort."""
        async with self.catalog.acquire() as conn, conn.transaction():
            await queue.fail(conn, ctx.operation_id, position, error)
            await pipeline.fail(conn, ctx)
        if self.metrics is not None:
            self.metrics.failures.labels(kind).inc()
            self.metrics.operation_seconds.labels(kind, "failed").observe(time.monotonic() - started)
        for undo in pipeline.undo:
            try:
                await undo(ctx)
            except Exception as undo_exc:  # the reconciler will report what is left
                log.warning("operation %s: undo %s failed: %s", ctx.operation_id, undo.__name__, describe(undo_exc))
        await self.announce(ctx.tenant_id)

    @staticmethod
    async def _pause(step: str, op_id: uuid.UUID) -> None:
        # Test hook only (TENANTPLANE_TEST_PAUSE_BEFORE_STEP): announce and block, so a test can
        # SIGKILL this process at a known step boundary.
        print(f"PAUSED before {step} operation={op_id}", file=sys.stdout, flush=True)
        await asyncio.Event().wait()
