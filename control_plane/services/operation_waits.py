"""Waiting for an operation to end (`GET /v1/operations/{id}?wait=N`), so that onboarding automation
learns the moment a tenant is ready instead of polling.

Workers `pg_notify(OPERATION_DONE_CHANNEL, id)` in the transaction that ends an operation (succeeded
or failed for good); one LISTEN connection per API process wakes the requests watching that id.
A watcher is registered before the operation is read, so a notification cannot fall between the
read and the wait; and a wait never relies on the notification alone: it reads the operation again
at least every `RECHECK_SECONDS` (a lost listener connection is reopened meanwhile), so the
answer is at most that late if a notification is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator

import asyncpg

from contracts.channels import OPERATION_DONE_CHANNEL
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
