"""The shared tier's backup of one tenant: its rows of every tenant table, in an archive of our own.

On the shared tier a tenant is rows with its `tenant_id` among everyone else's, so pg_dump cannot
take it alone. `write_archive()` opens one REPEATABLE READ, READ ONLY transaction (one snapshot
for the whole backup), records the manifest (manifest.py: tables, revision, counts, checksums) and
then streams `COPY (SELECT <columns but tenant_id> ... WHERE tenant_id = $1) TO STDOUT (FORMAT
binary)` table by table. `load_archive()` puts the rows into a target (a shared database, binding
the target tenant, whose id the rows take from the column default; or a dedicated database or
schema, whose tables have no `tenant_id`), all in one transaction, and proves the result against
the manifest before it commits.

Archive format, version 1 (integers big-endian):

    b"TPSHARED" u16 version
    frames: u8 kind, u32 length, payload (at most 16 MiB)
      b"M"  the manifest (JSON), first
      b"T"  a table starts: JSON {"table", "columns"}; tables come in the manifest's order
      b"D"  binary COPY data of the current table
      b"E"  the table ends: JSON {"table", "bytes"} (the COPY bytes of the table)
      b"Z"  the archive ends (empty); nothing may follow

The end frame makes an archive cut at a frame boundary fail as surely as one cut mid-frame.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterable, AsyncIterator

import asyncpg
import msgspec

from contracts.identifiers import quote
from provisioning.backups import manifest as manifests
from provisioning.backups.manifest import Manifest

MAGIC = b"TPSHARED"
ARCHIVE_VERSION = 1
_START = struct.Struct(">8sH")
_FRAME = struct.Struct(">cI")
MAX_FRAME = 16 << 20
_COPY_CHUNKS = 16  # COPY chunks waiting for the consumer (asyncpg hands out about 64 KiB each)


class ArchiveError(Exception):
    pass


class _TableStart(msgspec.Struct, frozen=True):
    table: str
    columns: list[str]


class _TableEnd(msgspec.Struct, frozen=True):
    table: str
    bytes: int


def _frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


async def _copy_out(conn: asyncpg.Connection, query: str, *args: object) -> AsyncIterator[bytes]:
    """A COPY TO STDOUT as an async iterator, through a bounded queue (asyncpg pushes chunks to a
    callback; the COPY waits while the consumer is behind)."""
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_COPY_CHUNKS)

    async def run() -> None:
        await conn.copy_from_query(query, *args, output=chunks.put, format="binary")
        await chunks.put(None)

    task = asyncio.create_task(run())
    try:
        while True:
            getter = asyncio.ensure_future(chunks.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():  # the COPY ended without its end marker: it failed
                getter.cancel()
                await task
                raise ArchiveError("the COPY ended early")
            chunk = getter.result()
            if chunk is None:
                break
            yield chunk
        await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def write_archive(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The archive of the tenant's rows in the shared database `conn` is connected to (as its
    owner or a superuser), in one REPEATABLE READ snapshot; the manifest goes first."""
    tenant_id = uuid.UUID(str(tenant_id))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # FORCE'd row-level security applies to a table owner that is not a superuser: bind first
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        recorded = await manifests.take(conn, tier="shared", schema="public", tenant_id=tenant_id)
        yield _START.pack(MAGIC, ARCHIVE_VERSION) + _frame(b"M", msgspec.json.encode(recorded))
        for table in recorded.tables:
            yield _frame(b"T", msgspec.json.encode(_TableStart(table.name, table.columns)))
            # asyncpg wraps it: COPY (<query>) TO STDOUT (FORMAT binary)
            query = (f"SELECT {', '.join(quote(c) for c in table.columns)} FROM public.{quote(table.name)} "
                     "WHERE tenant_id = $1")
            size = 0
            async for chunk in _copy_out(conn, query, tenant_id):
                for start in range(0, len(chunk), MAX_FRAME):
                    part = chunk[start:start + MAX_FRAME]
                    size += len(part)
                    yield _frame(b"D", part)
            yield _frame(b"E", msgspec.json.encode(_TableEnd(table.name, size)))
        yield _frame(b"Z")


def manifest_in(first: bytes) -> Manifest:
    """The manifest of an archive, from its first chunk (write_archive yields the start and the
    manifest frame together), so a backup can record it without reading the archive again."""
    start = _START.size + _FRAME.size
    if len(first) < start or _START.unpack(first[:_START.size])[0] != MAGIC:
        raise ArchiveError("not a shared-tier archive")
    kind, length = _FRAME.unpack(first[_START.size:start])
    if kind != b"M" or len(first) < start + length:
        raise ArchiveError("the archive does not start with its manifest")
    return msgspec.json.decode(first[start:start + length], type=Manifest)


class _Frames:
    """Reads frames from a byte stream, holding one frame at most."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = aiter(source)
        self._buffer = bytearray()

    async def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            try:
                self._buffer += await anext(self._source)
            except StopAsyncIteration:
                return False
        return True

    async def start(self) -> None:
        if not await self._fill(_START.size):
            raise ArchiveError("not a shared-tier archive (too short)")
        magic, version = _START.unpack(self._buffer[:_START.size])
        if magic != MAGIC:
            raise ArchiveError("not a shared-tier archive")
        if version != ARCHIVE_VERSION:
            raise ArchiveError(f"shared-tier archive version {version} is not known to this version of tenantplane")
        del self._buffer[:_START.size]

    async def next(self) -> tuple[bytes, bytes]:
        if not await self._fill(_FRAME.size):
            raise ArchiveError("the archive is cut short")
        kind, length = _FRAME.unpack(self._buffer[:_FRAME.size])
        if length > MAX_FRAME:
            raise ArchiveError("the archive has a frame larger than allowed")
        if not await self._fill(_FRAME.size + length):
            raise ArchiveError("the archive is cut short")
        payload = bytes(self._buffer[_FRAME.size:_FRAME.size + length])
        del self._buffer[:_FRAME.size + length]
        return kind, payload

    async def at_end(self) -> bool:
        return not self._buffer and not await self._fill(1)


async def load_archive(source: AsyncIterable[bytes], conn: asyncpg.Connection, *, schema: str = "public",
                       tenant_id: uuid.UUID | None = None) -> Manifest:
    """Load an archive into the tenant tables of `schema`, in one transaction; checked against its
    manifest before the commit. A shared-tier target (tables with `tenant_id`) needs the id the
    rows are to carry, `tenant_id` (the archive's own tenant, or another: a clone), and must hold
    no rows of that tenant yet. The target must be at the archive's revision (binary COPY needs
    the same column types). Returns the manifest."""
    frames = _Frames(source)
    await frames.start()
    kind, payload = await frames.next()
    if kind != b"M":
        raise ArchiveError("the archive does not start with its manifest")
    recorded = msgspec.json.decode(payload, type=Manifest)
    async with conn.transaction():
        if tenant_id is not None:
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(uuid.UUID(str(tenant_id))))
        target_revision = await manifests.revision(conn, schema)
        if target_revision != recorded.revision:
            raise ArchiveError(f"the archive is at revision {recorded.revision}, the target at {target_revision}")
        for table in recorded.tables:
            await _load_table(frames, conn, schema, table, tenant_id)
        kind, _ = await frames.next()
        if kind != b"Z" or not await frames.at_end():
            raise ArchiveError("the archive does not end where its end frame says")
        if found := await manifests.differences(recorded, conn, schema, tenant_id):
            raise ArchiveError("the loaded rows differ from the manifest: " + "; ".join(found))
    return recorded


async def _load_table(frames: _Frames, conn: asyncpg.Connection, schema: str,
                      table: manifests.TableFigures, tenant_id: uuid.UUID | None) -> None:
    kind, payload = await frames.next()
    start = msgspec.json.decode(payload, type=_TableStart) if kind == b"T" else None
    if start is None or start.table != table.name or start.columns != table.columns:
        raise ArchiveError(f"the archive's data for table {table.name} is not where its manifest says")
    target_columns = await manifests.columns(conn, schema, table.name)
    if not target_columns:
        raise ArchiveError(f"the target has no table {table.name}")
    if [c for c in target_columns if c != "tenant_id"] != table.columns:
        raise ArchiveError(f"table {table.name} has other columns in the target than in the archive")
    shared = "tenant_id" in target_columns
    if shared:
        if tenant_id is None:
            raise ArchiveError("a shared-tier target needs the tenant id the rows are to carry")
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {quote(schema)}.{quote(table.name)} "
                               "WHERE tenant_id = $1)", tenant_id):
            raise ArchiveError(f"the target already holds rows of tenant {tenant_id} in {table.name}")
    received = 0
    ended: list[_TableEnd] = []

    async def data() -> AsyncIterator[bytes]:
        nonlocal received
        while True:
            kind, payload = await frames.next()
            if kind == b"D":
                received += len(payload)
                yield payload
            elif kind == b"E":
                ended.append(msgspec.json.decode(payload, type=_TableEnd))
                return
            else:
                raise ArchiveError(f"unexpected frame {kind!r} in the data of table {table.name}")

    await conn.copy_to_table(table.name, source=data(), columns=table.columns, schema_name=schema, format="binary")
    if not ended or ended[0].table != table.name or ended[0].bytes != received:
        raise ArchiveError(f"the data of table {table.name} is incomplete")
    await _advance_sequences(conn, schema, table.name, table.columns)


async def _advance_sequences(conn: asyncpg.Connection, schema: str, table: str, cols: list[str]) -> None:
    """Identity and serial columns continue after the loaded values (as moves do)."""
    qualified = f"{quote(schema)}.{quote(table)}"
    for column in cols:
        seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, $2)", qualified, column)
        if seq:
            await conn.execute(
                f"SELECT setval($1, GREATEST((SELECT coalesce(max({quote(column)}), 0) FROM {qualified}), "
                "(SELECT last_value FROM " + ".".join(quote(p.strip('"')) for p in seq.split(".")) + "), 1))", seq)
