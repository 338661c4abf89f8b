"""A lean HTTP/1.1 keep-alive client for the benchmarks that measure a server under hundreds of
requests in flight from this same process: on two cores, httpx's per-request machinery cost the
load generator as much CPU as the server under test, so the figure measured the client. This is
one connection per in-flight slot, h11 (httpx's own HTTP/1.1 parser) for the protocol, and
nothing else: no pooling, redirects, cookies or decoding."""

from __future__ import annotations

import asyncio

import h11

_RETRIED = (ConnectionError, asyncio.IncompleteReadError, h11.RemoteProtocolError)


class LeanConnection:
    """One keep-alive connection; `request` reopens it when the server closed it (as a client
    retries a reset keep-alive connection), up to three attempts."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: tuple[tuple[str, str], ...] = ()) -> int:
        """The response's status code; its body is read and dropped."""
        for attempt in range(3):
            try:
                return await self._once(method, path, body, headers)
            except _RETRIED:
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._h11 = h11.Connection(h11.CLIENT)
        assert self._reader is not None
        out = self._h11.send(h11.Request(method=method, target=path, headers=[
            ("Host", f"{self.host}:{self.port}"), ("Content-Length", str(len(body))), *headers]))
        if body:
            out += self._h11.send(h11.Data(data=body))
        out += self._h11.send(h11.EndOfMessage())
        self._writer.write(out)
        await self._writer.drain()
        status = 0
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                self._h11.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        else:  # the server asked to close: the next request opens a new connection
            await self.close()
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None
