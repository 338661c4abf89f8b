"""The in-process load generator: Zipf-distributed tenant choice, a fixed number of concurrent
clients, every run bounded both in requests and in seconds.

The application under test is driven through `httpx.ASGITransport`, in this process and on this
event loop (see bench/__init__.py for why this and not uvicorn over loopback).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from litestar import Litestar

ZIPF_S = 1.1


def zipf_sequence(n: int, count: int, *, s: float = ZIPF_S, seed: int = 1) -> list[int]:
    """`count` ranks in [0, n): rank r is drawn with probability proportional to 1 / (r + 1) ** s."""
    rng = random.Random(seed)
    weights = [1.0 / (rank ** s) for rank in range(1, n + 1)]
    cumulative = list(itertools.accumulate(weights))
    return rng.choices(range(n), cum_weights=cumulative, k=count)


@asynccontextmanager
async def asgi_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running (the router starts its registry, directory and
    invalidation listener there), and an httpx client that calls it in process."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as client:
            yield client


@dataclass
class LoadResult:
    sent: int = 0
    elapsed: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    latencies_ns: list[int] = field(default_factory=list)
    exceptions: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        """Every answer that is not a 200, and every request that raised."""
        return self.sent - self.ok

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies_ns, q) / 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


async def run_load(client: httpx.AsyncClient, hosts: Sequence[str], *, concurrency: int,
                   max_seconds: float, path: str = "/api/projects") -> LoadResult:
    """Send `GET path` once for each entry of `hosts` (the Host header picks the tenant), from
    `concurrency` clients, stopping early when `max_seconds` have passed."""
    result = LoadResult()
    cursor = iter(range(len(hosts)))
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client_loop() -> None:
        for i in cursor:  # shared iterator: each request is sent exactly once
            if time.perf_counter() > deadline:
                return
            headers = {"host": hosts[i]}
            t0 = time.perf_counter_ns()
            try:
                response = await client.get(path, headers=headers)
            except Exception as exc:  # counted as an error, never fatal to the run
                result.exceptions[type(exc).__name__] += 1
                result.statuses["exception"] += 1
            else:
                result.statuses[response.status_code] += 1
                result.latencies_ns.append(time.perf_counter_ns() - t0)
            result.sent += 1

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    return result
