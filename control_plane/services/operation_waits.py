"""Long polls on operations (`GET /v1/operations/{id}?wait=N`): the answer comes the moment the
operation ends, so onboarding automation need not poll.

Workers `pg_notify(OPERATION_DONE_CHANNEL, id)` when an operation ends; one LISTEN connection per
API process wakes the requests watching that id. A watcher is registered before the operation is
read again, so no notification falls in between; a missed one costs at most `RECHECK_SECONDS`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import asyncpg

from contracts.channels import OPERATION_DONE_CHANNEL
from control_plane.schemas import OperationOut
from provisioning.queue import OPEN_STATES  # the states a wait holds the answer in

__all__ = ["MAX_WAIT_SECONDS", "OPEN_STATES", "RECHECK_SECONDS", "OperationWaits"]

log = logging.getLogger("tenantplane.operation_waits")

RECHECK_SECONDS = 1.0
MAX_WAIT_SECONDS = 30.0


class OperationWaits:
    def __init__(self, catalog_dsn: str) -> None:
        self._dsn = catalog_dsn
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def read_when_ended(self, read: Callable[[], Awaitable[OperationOut]], wait: float) -> OperationOut:
        """What `read()` answers once the operation is neither queued nor running, or after `wait`
        seconds, whichever comes first."""
        op = await read()  # 404 for an unknown id, before anything waits
        if wait <= 0 or op.state not in OPEN_STATES:
            return op
        deadline = time.monotonic() + wait
        await self.listen()
        with self.watch(op.id) as ended:
            op = await read()  # again, now that its notification cannot be missed
            while op.state in OPEN_STATES and (remaining := deadline - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), min(remaining, RECHECK_SECONDS))
                ended.clear()
                op = await read()
        return op

    @contextlib.contextmanager
    def watch(self, op_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when `op_id` is announced as ended (register before reading its state)."""
        event = asyncio.Event()
        self._watchers.setdefault(op_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(op_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[op_id]

    async def listen(self) -> None:
        """Make sure the LISTEN connection is up (opened on the first wait, not at startup, so an
        API that nobody asks to wait holds no extra catalog connection). Best effort: without
        it, waits fall back to reading the operation every RECHECK_SECONDS."""
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                await conn.add_listener(OPERATION_DONE_CHANNEL, self._notified)
            except Exception as exc:
                log.warning("cannot listen for ended operations (%s); waits poll instead", type(exc).__name__)
                return
            self._conn = conn

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            op_id = uuid.UUID(payload)
        except ValueError:
            return
        for event in self._watchers.get(op_id, ()):
            event.set()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
