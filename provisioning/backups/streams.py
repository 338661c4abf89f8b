"""Bridges between async byte streams and blocking code running in a thread, with bounded queues.

Tink's decrypting stream pulls its ciphertext from a blocking file object, and boto3's response
bodies are blocking iterators; neither may run on the event loop. `through_thread()` runs such
blocking work in a thread of its own: what it reads comes from an async iterator (through a
blocking reader fed by the loop), what it writes is yielded to the async consumer. Both directions
hold at most `depth` chunks, so memory stays bounded whatever the size of the stream, and a slow
side holds the other back rather than letting data pile up.

The thread is a plain `threading.Thread`, not the loop's default executor: a restore chains
several such threads (store read -> decrypt), and executor slots held for a whole stream could
starve the short `asyncio.to_thread` calls the same pipeline makes (on 2 cores the default
executor has 6 workers).

Failures travel both ways: an exception in the source iterator reaches the thread (its read
raises) and is re-raised to the consumer as itself; an exception in the thread ends the stream
with that exception; a consumer that stops early (break, aclose, cancellation) makes the thread's
next read or write raise `Abandoned`, and waits for the thread to end.
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

DEFAULT_DEPTH = 4  # chunks in flight each way (chunks are about 1 MiB: a few MiB at most)
_END = object()


class Abandoned(Exception):
    """The async side stopped listening; the blocking work should end."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ThreadReader(io.RawIOBase):
    """A blocking, readable file object in the thread, fed with chunks by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        super().__init__()
        self._loop = loop
        self._chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.room = asyncio.Semaphore(depth)  # taken by the feeder per chunk, given back once read
        self._current = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            if self._eof:
                return 0
            item = self._chunks.get()
            if item is _END:
                self._eof = True
                return 0
            if isinstance(item, _Failure):
                self._eof = True
                raise item.exc
            self._loop.call_soon_threadsafe(self.room.release)
            self._current = memoryview(item)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def put(self, item: Any) -> None:  # from the loop
        self._chunks.put(item)


class ThreadWriter:
    """What the blocking work calls to hand a chunk to the async consumer; blocks while `depth`
    chunks wait there, and raises `Abandoned` once the consumer has gone."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self.abandoned = threading.Event()

    def __call__(self, chunk: bytes) -> None:
        if not chunk:
            return
        while not self._room.acquire(timeout=0.2):
            if self.abandoned.is_set():
                raise Abandoned()
        if self.abandoned.is_set():
            raise Abandoned()
        self._loop.call_soon_threadsafe(self.out.put_nowait, bytes(chunk))

    def taken(self) -> None:  # from the loop, once the consumer has a chunk
        self._room.release()

    def finish(self, item: Any) -> None:  # from the thread: _END or a _Failure, never blocked
        self._loop.call_soon_threadsafe(self.out.put_nowait, item)


@asynccontextmanager
async def closing(source: AsyncIterable[bytes]) -> AsyncIterator[AsyncIterable[bytes]]:
    """Async generators are not closed by leaving an `async for`; close ours explicitly, so a
    stream that stops early stops its source (a pg_dump, a store read) at once, not at GC."""
    try:
        yield source
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()


Work = Callable[[ThreadReader | None, ThreadWriter], None]


async def through_thread(source: AsyncIterable[bytes] | None, work: Work, *,
                         depth: int = DEFAULT_DEPTH, name: str = "backup-stream") -> AsyncIterator[bytes]:
    """Run `work(reader, write)` in a thread; `reader` reads `source` (None without a source),
    every `write(chunk)` is yielded here."""
    loop = asyncio.get_running_loop()
    reader = ThreadReader(loop, depth) if source is not None else None
    writer = ThreadWriter(loop, depth)
    source_error: list[BaseException] = []

    def run() -> None:
        try:
            work(reader, writer)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            writer.finish(_Failure(exc))
        else:
            writer.finish(_END)

    async def feed() -> None:
        assert reader is not None and source is not None
        try:
            async with closing(source) as chunks:
                async for chunk in chunks:
                    if chunk:
                        await reader.room.acquire()
                        reader.put(chunk)
        except BaseException as exc:
            source_error.append(exc)
            reader.put(_Failure(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            reader.put(_END)

    thread = threading.Thread(target=run, name=name, daemon=True)
    feeder = asyncio.create_task(feed()) if reader is not None else None
    thread.start()
    finished = False
    try:
        while True:
            item = await writer.out.get()
            if item is _END:
                finished = True
                break
            if isinstance(item, _Failure):
                finished = True
                if source_error and item.exc is source_error[0]:
                    raise item.exc
                if source_error:  # the work failed because its input did: say what the input said
                    raise source_error[0] from item.exc
                raise item.exc
            writer.taken()
            yield item
    finally:
        if not finished:
            writer.abandoned.set()
            if reader is not None:
                reader.put(_Failure(Abandoned()))
        if feeder is not None:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
        # the thread ends promptly now: its reads and writes raise once abandoned
        await asyncio.to_thread(thread.join)


async def iterate_in_thread(produce: Callable[[Callable[[bytes], None]], None], *,
                            depth: int = DEFAULT_DEPTH, name: str = "backup-read") -> AsyncIterator[bytes]:
    """`produce(write)` runs in a thread and calls `write(chunk)` for each chunk it yields here."""
    async with aclosing(through_thread(None, lambda _reader, write: produce(write), depth=depth, name=name)) as chunks:
        async for chunk in chunks:
            yield chunk
