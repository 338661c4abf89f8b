"""A copy's progress (tables, rows and bytes copied), saved on its operation's row
(queue.save_progress) at each table's end and at most every SAVE_EVERY seconds between, so that
GET /v1/operations/{id} shows how far a move has got. Best effort: a save that fails is logged and
the copy goes on."""

from __future__ import annotations

import logging
import time
import uuid

from provisioning import queue

log = logging.getLogger("tenantplane.worker")

SAVE_EVERY = 1.0  # seconds between saves while a table is being copied


class CopyProgress:
    def __init__(self, catalog: queue.Catalog, op_id: uuid.UUID, phase: str = "copy_data") -> None:
        self._catalog, self._op_id, self._phase = catalog, op_id, phase
        self.tables_total = self.tables_done = self.rows = self.bytes = 0
        self.table: str | None = None
        self._saved_at = 0.0

    def snapshot(self) -> dict[str, object]:
        return {"phase": self._phase, "tables_total": self.tables_total, "tables_done": self.tables_done,
                "table": self.table, "rows_copied": self.rows, "bytes_copied": self.bytes}

    async def start(self, tables: list[str]) -> None:
        self.tables_total, self.tables_done, self.rows, self.bytes, self.table = len(tables), 0, 0, 0, None
        await self.save()

    async def chunk(self, size: int) -> None:
        """`size` more bytes left the source (saved now and then)."""
        self.bytes += size
        if time.monotonic() - self._saved_at >= SAVE_EVERY:
            await self.save()

    async def table_done(self, rows: int) -> None:
        self.rows += rows
        self.tables_done += 1
        await self.save()

    async def save(self) -> None:
        self._saved_at = time.monotonic()
        try:
            await queue.save_progress(self._catalog, self._op_id, self.snapshot())
        except Exception as exc:  # progress is for people watching; the copy matters more
            log.warning("operation %s: progress not saved (%s)", self._op_id, type(exc).__name__)
