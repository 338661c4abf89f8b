"""The provisioning worker: a loop that claims due operations from the queue (provisioning/queue.py)
and runs each in a task of its own (provisioning/runner.py), beside its periodic duties
(provisioning/duties.py). One writer per tenant, restartable at any point: claims are session
advisory locks on the worker's claims connection, so a dead worker's operations are resumed by the
next worker to look, at their first step not recorded as done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

import asyncpg

from contracts.channels import WAKE_CHANNEL
from provisioning import announcement_outbox, duties, fanout, queue, tree_check
from provisioning.announcements import BatchedAnnouncements, redis_client
from provisioning.claims import Claims
from provisioning.config import WorkerConfig
from provisioning.erasure_stripe import StripeCustomers
from provisioning.health import HealthServer, Heartbeat
from provisioning.metrics import WorkerMetrics
from provisioning.runner import Runner, describe, step_names
from provisioning.scram import remember_salted_passwords
from provisioning.sealing import SecretBox
from provisioning.servers import AdminSessions

log = logging.getLogger("tenantplane.worker")

COORDINATE_EVERY = 0.5  # seconds between fleet-migration coordination steps of a busy worker
OUTAGE_BACKOFF_MAX = 10.0  # seconds between rounds at most while the catalog cannot be reached
__all__ = ["Worker", "WorkerConfig"]


class _Stopped(Exception):
    """Ends the worker's TaskGroup, which cancels the duties and the operations still running."""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The catalog pool's reset: nothing beyond asyncpg's own rollback of an open transaction (the
    pool's connections carry no session state; the default reset would cost a round trip)."""


class Worker:
    def __init__(self, config: WorkerConfig, *, extra_duties: Sequence[duties.Duty] = (),
                 wakes: Mapping[str, Callable[[], None]] | None = None,
                 customers: StripeCustomers | None = None) -> None:
        """`extra_duties` and `wakes` let the composer (the CLI) add work that is not provisioning's
        (the billing applier): duties supervised beside the worker's own, and NOTIFY channels the
        wake-up listener also LISTENs on, each with what to call (also once after every reconnect,
        for what was notified while nobody listened). `customers`: what erasure deletes Stripe
        customers with (provisioning/erasure_stripe.py), given only with STRIPE_API_KEY."""
        self.config = config
        self._customers = customers
        self._extra_duties = tuple(extra_duties)
        self._wakes = dict(wakes or {})
        self.box = SecretBox(config.secret_key)
        self._claims = Claims(config.catalog_dsn, timeout=config.catalog_connect_timeout_seconds,
                              command_timeout=config.catalog_statement_timeout_seconds)
        self._wake = asyncio.Event()
        self._spares_wanted = asyncio.Event()  # set after this worker claimed a spare
        self._running: dict[uuid.UUID, uuid.UUID | None] = {}  # operation -> its server
        self._finished: list[uuid.UUID] = []  # operations that ended here, claims not yet released
        self._coordinated_at = 0.0
        self._announcements: BatchedAnnouncements | None = None
        # set by run(): the catalog pool, the runner of claimed operations, the group they run in
        self._catalog: asyncpg.Pool | None = None
        self._runner: Runner | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._listener: asyncpg.Connection | None = None  # LISTENs for wake-ups; opened again when lost
        self.metrics = WorkerMetrics()
        self.heartbeat = Heartbeat(longest_pause=OUTAGE_BACKOFF_MAX)
        self.health_port: int | None = None  # set once the endpoint listens (WORKER_METRICS_PORT)

    async def announce(self, tenant_id: uuid.UUID, noted: Sequence[int] = ()) -> None:
        """Tell every router that this tenant's placement changed (what Redis does not take waits in
        the catalog's outbox; `noted`: its row there, written with the change); announcements of
        operations that end together go out in one Redis round trip."""
        if self._announcements is not None:
            await self._announcements.announce(tenant_id, noted=noted)

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        remember_salted_passwords()  # one PBKDF2 per role, not per connection (a fan-out opens many)
        async with contextlib.AsyncExitStack() as opened:  # everything is closed here, last first
            # min_size=0: a worker started while the catalog is down waits for it instead of exiting
            self._catalog = await asyncpg.create_pool(
                cfg.catalog_dsn, min_size=0, max_size=cfg.concurrency + 2, reset=_keep_session,
                timeout=cfg.catalog_connect_timeout_seconds, command_timeout=cfg.catalog_statement_timeout_seconds)
            opened.push_async_callback(self._catalog.close)
            opened.push_async_callback(self._claims.close)
            redis = None
            if cfg.redis_url:
                redis = redis_client(cfg.redis_url, cfg.redis_timeout_seconds)
                opened.push_async_callback(redis.aclose)
                # what Redis does not take goes to the catalog's outbox, which the workers deliver
                self._announcements = BatchedAnnouncements(
                    redis, timeout=cfg.redis_timeout_seconds,
                    outbox=announcement_outbox.CatalogOutbox(self._catalog))
                opened.push_async_callback(self._announcements.aclose)
            opened.push_async_callback(self._close_listener)
            sessions = AdminSessions(self.box)  # admin sessions kept between operations
            opened.push_async_callback(sessions.close)
            self._runner = Runner(cfg, self._catalog, self.box, self.announce, sessions, self._spares_wanted,
                                  metrics=self.metrics, customers=self._customers)
            if cfg.metrics_port is not None:
                health = HealthServer(cfg.metrics_host, cfg.metrics_port, self.heartbeat, self.metrics)
                opened.push_async_callback(asyncio.to_thread, health.close)
                health.start()
                self.health_port = health.port
                log.info("worker health and metrics on http://%s:%d (/health/live, /health/ready, /metrics)",
                         cfg.metrics_host, health.port)
            await self._agree_on_tree(stop)  # raises TenantTreeMismatch: this worker must not run
            log.info("worker started (concurrency %d)", cfg.concurrency)
            try:
                async with asyncio.TaskGroup() as self._tasks:
                    own = duties.worker_duties(cfg, self._catalog, self.box, self._spares_wanted,
                                               metrics=self.metrics, redis=redis)
                    for duty in (*own, *self._extra_duties):
                        self._tasks.create_task(duties.supervise(duty.name, duty.start, restart=duty.restart),
                                                name=f"duty: {duty.name}")
                    await self._loop(stop)
                    raise _Stopped
            except* _Stopped:
                pass

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0  # rounds in a row that could not reach the catalog
        while not stop.is_set():
            # cleared before the work, not after it: a wake-up that arrives meanwhile (an operation
            # ended, a NOTIFY of operations just queued) starts the next round at once
            self._wake.clear()
            try:
                await self._listen()
                await self._dispatch()
                await self._coordinate()
            except Exception as exc:  # the catalog is away: back off, and the next round reconnects
                failures += 1
                log.warning("catalog unreachable (%s); trying again in %.1f s", describe(exc), self._pause(failures))
            else:
                if failures:
                    log.info("catalog reachable again after %d failed round(s)", failures)
                failures = 0
            self.heartbeat.tick(catalog_ok=not failures)
            self.metrics.catalog_up.set(0 if failures else 1)
            waiters = [asyncio.ensure_future(stop.wait())]
            if not failures:
                waiters.append(asyncio.ensure_future(self._wake.wait()))
            try:
                await asyncio.wait(waiters, timeout=self._pause(failures), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _agree_on_tree(self, stop: asyncio.Event) -> None:
        """Before any work: this worker's tenant tree is the catalog's (tree_check.py). A catalog
        that cannot be reached yet is waited for, as the loop does."""
        failures = 0
        while True:
            try:
                async with self._catalog.acquire() as conn:
                    await tree_check.agree_on_tree(conn, self.config.tenant_tree, "worker")
                return
            except tree_check.TenantTreeMismatch:
                raise
            except Exception as exc:
                if stop.is_set():  # stopped before the catalog came: nothing will be run
                    return
                failures += 1
                log.warning("catalog unreachable (%s); trying again in %.1f s", describe(exc), self._pause(failures))
                self.heartbeat.tick(catalog_ok=False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._pause(failures))

    def _pause(self, failures: int) -> float:
        return min(OUTAGE_BACKOFF_MAX, self.config.poll_interval * 2 ** failures) if failures else self.config.poll_interval

    async def _listen(self) -> None:
        """The wake-up listener, opened again when its connection was lost (a restarted catalog):
        without it the worker still polls, but answers queued operations a poll later."""
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._close_listener()
        cfg = self.config
        listener = await asyncpg.connect(cfg.catalog_dsn, timeout=cfg.catalog_connect_timeout_seconds,
                                         command_timeout=cfg.catalog_statement_timeout_seconds)
        try:
            await listener.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
            for channel, wake in self._wakes.items():
                await listener.add_listener(channel, lambda *_, wake=wake: wake())
        except BaseException:
            listener.terminate()
            raise
        self._listener = listener
        self._wake.set()  # what was queued while nobody listened is looked at now
        for wake in self._wakes.values():
            wake()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), self.config.catalog_connect_timeout_seconds)
            if not listener.is_closed():
                listener.terminate()

    async def _coordinate(self) -> None:
        """Advance the running fleet migrations (fanout.coordinate). While this worker still runs
        operations it does so at most every COORDINATE_EVERY seconds (each call costs a few catalog
        queries; a wave ends when the workers fall idle)."""
        loop = asyncio.get_running_loop()
        if self._running and loop.time() - self._coordinated_at < COORDINATE_EVERY:
            return
        self._coordinated_at = loop.time()
        if await fanout.coordinate(self._catalog, self._claims, self.box, self.config.tenant_tree):
            # another worker coordinates a run and may have looked before our last operation
            # ended: look again soon rather than at the next poll
            loop.call_later(0.05, self._wake.set)

    async def _dispatch(self) -> None:
        """Claim the due operations this worker has room for and start each in a task of its own.
        Two queries: the claim (Claims.take), then the start (queue.start_claimed)."""
        free = self.config.concurrency - len(self._running)
        released, self._finished = self._finished, []
        if free <= 0:
            if released:
                await self._claims.release(released)
            return
        try:
            servers = {c.id: c.server_id for c in await self._claims.take(free, self._running, released)}
        except Exception as exc:
            log.warning("claiming operations failed: %s", describe(exc))
            self._finished += released  # their claims are let go next round
            return
        try:
            ops = await self._start_claimed(list(servers)) if servers else []
        except Exception as exc:
            log.warning("starting claimed operations failed: %s", describe(exc))
            with contextlib.suppress(Exception):  # not run: let another worker (or the next round) have them
                await self._claims.release(list(servers))
            ops = []
        for op in ops:
            self._running[op.id] = servers[op.id]
            task = self._tasks.create_task(self._run_claimed(op), name=f"operation {op.id}")
            task.add_done_callback(lambda _, op_id=op.id: (self._running.pop(op_id, None), self._wake.set()))

    async def _start_claimed(self, claimed: list[uuid.UUID]) -> list[queue.Started]:
        """Start the claimed operations still due (queue.start_claimed); release the rest."""
        ops = await queue.start_claimed(self._catalog, claimed, step_names())
        stale = list(set(claimed) - {op.id for op in ops})
        if stale:
            await self._claims.release(stale)
        return ops

    async def _run_claimed(self, op: queue.Started) -> None:
        try:
            await self._runner.execute(op)
        except Exception:
            log.exception("operation %s: unexpected worker error", op.id)
        finally:
            # released by the next round's claim query (the task's end wakes the loop for it)
            self._finished.append(op.id)
