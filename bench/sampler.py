"""Counts the backends of tenant roles on a server, from pg_stat_activity, every ~10 ms.

It runs in a thread of its own, with its own event loop and its own admin connection, so its
sampling rhythm does not depend on how busy the benchmark's event loop is (the benchmark's loop
is saturated on purpose). Bounded by `max_seconds` in case `stop()` is never reached.
"""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg

# tenant login roles are tp_role_<hex> (contracts/identifiers.py); '_' is a LIKE wildcard
TENANT_BACKENDS = r"SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'tp\_role\_%'"


class BackendSampler:
    def __init__(self, admin_dsn: str, interval: float = 0.010, max_seconds: float = 600.0) -> None:
        self.admin_dsn = admin_dsn
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak = 0
        self.samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="backend-sampler", daemon=True)

    def __enter__(self) -> "BackendSampler":
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the backend sampler did not start")
        if self.error is not None:
            raise RuntimeError("the backend sampler could not connect") from self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the benchmark (no figure without samples)
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            self._ready.set()
            deadline = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                count = await conn.fetchval(TENANT_BACKENDS)
                self.peak = max(self.peak, count)
                self.samples += 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()
