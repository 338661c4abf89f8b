"""Moving a tenant between tiers and servers, in any direction.

    plan_move → prepare_target → pause_writes → copy_data → verify_copy → switch_placement → remove_old_copy

The target (its database, schema or role, at the tenant's revision) is made before writes are
paused, so the pause lasts only for the grace, the copy, the comparison and the switch. Writes are
paused (status `maintenance`: routers answer 503 to writes, reads go on from the old copy), the
data is copied table by table with COPY, row counts and checksums are compared, and the placement
is switched in one catalog transaction that also lifts the pause; routers are told at once and,
since the pool key carries the placement version, can never reach the old copy again. The old
copy is removed only after that. Each tier does its part through its manager (provisioning/tiers/).
Each step can run again: the target is cleared before a copy, and everything about the old
placement is kept in the operation's params. A move that fails before the switch leaves the
tenant on its old placement, active (`abort_move` + `discard_target`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from contracts.identifiers import quote
from contracts.tiers import layout_of
from provisioning import queue
from provisioning.context import StepContext
from provisioning.progress import CopyProgress
from provisioning.servers import load_server
from provisioning.steps import catalog as catalog_steps
from provisioning.tiers import tier_manager
from provisioning.tiers.tables import TenantTables

WRITE_GRACE_SECONDS = 1.0  # lets requests admitted before the pause finish their transactions


# -- where the tenant was and where it goes --------------------------------------------------------
async def _save(ctx: StepContext, **values: Any) -> None:
    ctx.params.update(values)
    await queue.save_params(ctx.catalog, ctx.operation_id, values)


async def plan_move(ctx: StepContext) -> None:
    """Record the source (the current placement) and choose the target, once."""
    if "source" in ctx.params:
        return
    row = await ctx.catalog.fetchrow(
        "SELECT p.server_id, p.database_name, p.role_name, p.schema_name, p.tenant_revision, t.tier "
        "FROM placements p JOIN tenants t ON t.id = p.tenant_id WHERE p.tenant_id = $1", ctx.tenant_id)
    if row is None:
        raise LookupError("the tenant has no placement to move from")
    target_server = ctx.params.get("server_id")
    same_tier = ctx.params["tier"] == row["tier"]
    if target_server is None:
        # another server when the tier stays the same (a drain); any when the tier changes
        target_server = await ctx.catalog.fetchval(
            "SELECT s.id FROM database_servers s LEFT JOIN placements p ON p.server_id = s.id "
            "WHERE s.status = 'active' AND (NOT $1 OR s.id <> $2) GROUP BY s.id "
            "HAVING count(p.tenant_id) < s.capacity_databases "
            "ORDER BY (s.id = $2) DESC, count(p.tenant_id)::float / s.capacity_databases, s.name LIMIT 1",
            same_tier, row["server_id"])
        if target_server is None:
            raise catalog_steps.NoCapacity("no active database server has room for the tenant")
    if same_tier and str(target_server) == str(row["server_id"]):
        raise ValueError("the tenant is on that tier of that server already: nothing to move")
    await _save(ctx, source={"tier": row["tier"], "server_id": str(row["server_id"]),
                             "revision": row["tenant_revision"]},
                target={"tier": ctx.params["tier"], "server_id": str(target_server)})


async def _side(ctx: StepContext, which: str) -> StepContext:
    """A context for the source or the target location (its own tier and server)."""
    spec = ctx.params[which]
    server = await load_server(ctx.catalog, uuid.UUID(spec["server_id"]))
    return dataclasses.replace(ctx, tier=spec["tier"], _server=server,
                               params={**ctx.params, "target": ctx.params["source"]["revision"]})


async def _tables(ctx: StepContext, which: str) -> TenantTables:
    side = await _side(ctx, which)
    return tier_manager(side.tier).tables(side)


def _same_role(ctx: StepContext) -> bool:
    """Source and target share the tenant's login/SET ROLE role (same server, both using it)."""
    src, dst = ctx.params["source"], ctx.params["target"]
    return (src["server_id"] == dst["server_id"] and layout_of(src["tier"]).has_tenant_role
            and layout_of(dst["tier"]).has_tenant_role)


# -- the pause ---------------------------------------------------------------------------------------
async def pause_writes(ctx: StepContext) -> None:
    changed = await ctx.catalog.fetchval(
        "UPDATE tenants SET status = 'maintenance', updated_at = now() WHERE id = $1 AND status = 'active' "
        "RETURNING 1", ctx.tenant_id)
    if changed or "paused_at" not in ctx.params:
        await ctx.announce(ctx.tenant_id)
        await _save(ctx, paused_at=time.time())
        await asyncio.sleep(WRITE_GRACE_SECONDS)


# -- the target -----------------------------------------------------------------------------------
async def prepare_target(ctx: StepContext) -> None:
    """Create the tenant's objects on the target, at the source's revision (idempotent steps)."""
    target = await _side(ctx, "target")
    # reads go on from the old copy meanwhile, logging in as the role the copies share
    keep_login = _same_role(ctx) and layout_of(ctx.params["source"]["tier"]).logs_in_as_tenant
    await tier_manager(target.tier).prepare_target(target, keep_login)


async def copy_data(ctx: StepContext) -> None:
    source, target = await _tables(ctx, "source"), await _tables(ctx, "target")
    if ctx.params["source"] == {**ctx.params["target"], "revision": ctx.params["source"]["revision"]}:
        raise ValueError("source and target are the same place; refusing to clear it")
    await copy_tables(source, target, CopyProgress(ctx.catalog, ctx.operation_id))


async def copy_tables(source: TenantTables, target: TenantTables, progress: CopyProgress | None = None) -> None:
    """Every table of `source` into `target` (cleared first, so a rerun copies afresh); a clone
    from a backup's scratch database copies this way too (clones.py). `progress` (a move's) is told
    every table, chunk and row count."""
    async with source.connect() as src, target.connect() as dst:
        tables = await target.tables(dst)
        if sorted(tables) != sorted(await source.tables(src)):
            raise RuntimeError("source and target hold different tables; migrate the tenant first")
        await target.clear(dst, tables)
        if progress is not None:
            await progress.start(tables)
        for table in tables:
            columns = await target.columns(dst, table)
            exprs = [source.read_column(c) for c in columns]
            query = f"SELECT {', '.join(exprs)} FROM {source.qualified(table)}{source.row_filter}"
            if progress is not None:
                progress.table = table
            copied = await _stream(src, query, dst, table, columns, target.schema, progress)
            if progress is not None:
                await progress.table_done(copied)
            for column in columns:  # identity columns continue after the copied values
                seq = await dst.fetchval("SELECT pg_get_serial_sequence($1, $2)", target.qualified(table), column)
                if seq:
                    await dst.execute(
                        f"SELECT setval($1, GREATEST((SELECT coalesce(max({quote(column)}), 0) "
                        f"FROM {target.qualified(table)}), (SELECT last_value FROM {seq}), 1))", seq)


_STREAM_CHUNKS = 64  # COPY chunks in flight between the source and the target (a few MB at most)


async def _stream(src: asyncpg.Connection, query: str, dst: asyncpg.Connection, table: str,
                  columns: list[str], schema: str, progress: CopyProgress | None = None) -> int:
    """COPY `query` out of the source into `table` on the target at the same time (binary format,
    chunks handed over through a bounded queue), so the copy takes about as long as the slower of
    the two sides rather than both one after the other, and never holds the table in memory or on
    disk. A failure on either side fails the other: a half-fed target COPY is aborted, not ended.
    Returns the rows copied."""
    chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=_STREAM_CHUNKS)

    async def read() -> None:
        try:
            await src.copy_from_query(query, output=counted if progress is not None else chunks.put,
                                      format="binary")
        except BaseException as exc:
            while chunks.full():  # the target gets none of the rest anyway: make room for the error
                chunks.get_nowait()
            chunks.put_nowait(exc)
            raise
        await chunks.put(None)

    async def counted(chunk: bytes) -> None:
        await chunks.put(chunk)
        await progress.chunk(len(chunk))

    async def received() -> AsyncIterator[bytes]:
        while (chunk := await chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise RuntimeError("the source stopped sending mid-copy") from chunk
            yield chunk

    reader = asyncio.create_task(read())
    try:
        status = await dst.copy_to_table(table, source=received(), columns=columns, schema_name=schema,
                                         format="binary")
    except BaseException:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        raise
    await reader
    return int(status.split()[-1])  # "COPY <rows>"


async def _fingerprint(loc: TenantTables, conn: asyncpg.Connection, table: str, columns: list[str],
                       method: str) -> tuple[int, str]:
    """(rows, checksum) of the tenant's rows of `table`. "hash": the sum of every row's 64-bit
    hash by its columns' own hash functions (`hash_record_extended`, PostgreSQL 14+; no text
    conversion and no sort, about four times cheaper). "md5": the md5 of every row's text in key
    order, for column types without an extended hash function or servers without the function."""
    row = ", ".join(quote(c) for c in columns)
    if method == "hash":
        query = f"SELECT count(*) AS n, coalesce(sum(hash_record_extended(ROW({row}), 0)), 0)::text AS digest"
    else:
        key = await loc.key(conn, table) or columns
        query = (f"SELECT count(*) AS n, coalesce(md5(string_agg(md5(ROW({row})::text), '' "
                 f"ORDER BY {', '.join(quote(c) for c in key)})), '') AS digest")
    found = await conn.fetchrow(f"{query} FROM {loc.qualified(table)}{loc.row_filter}")
    return found["n"], found["digest"]


async def _fingerprints(source: TenantTables, src: asyncpg.Connection, target: TenantTables, dst: asyncpg.Connection,
                        table: str, columns: list[str]) -> tuple[tuple[int, str], tuple[int, str]]:
    """Both sides at once, by hash; by md5 on both when either side cannot hash (42883)."""
    for method in ("hash", "md5"):
        mine, theirs = await asyncio.gather(_fingerprint(source, src, table, columns, method),
                                            _fingerprint(target, dst, table, columns, method), return_exceptions=True)
        failed = [r for r in (mine, theirs) if isinstance(r, BaseException)]
        if not failed:
            return mine, theirs  # type: ignore[return-value]
        if method == "md5" or not all(isinstance(r, asyncpg.UndefinedFunctionError) for r in failed):
            raise failed[0]
    raise AssertionError("unreachable")


async def _compare(ctx: StepContext) -> tuple[dict[str, int], str | None]:
    source, target = await _tables(ctx, "source"), await _tables(ctx, "target")
    async with source.connect() as src, target.connect() as dst:
        await target.bind(dst)
        await source.bind(src)
        report = {}
        for table in await target.tables(dst):
            columns = [c for c in await target.columns(dst, table) if c != "tenant_id"]
            mine, theirs = await _fingerprints(source, src, target, dst, table, columns)
            if mine != theirs:
                return report, f"table {table}: source has {mine[0]} rows, target {theirs[0]}; checksums differ"
            report[table] = mine[0]
    return report, None


async def verify_copy(ctx: StepContext) -> None:
    """Row counts and checksums per table must agree before anything is switched. A write admitted
    just before the pause may commit after the copy: then the copy is made again (the source no
    longer changes) and compared again; a second difference fails the step."""
    report, difference = await _compare(ctx)
    if difference is not None:
        await copy_data(ctx)
        report, difference = await _compare(ctx)
        if difference is not None:
            raise RuntimeError(difference)
    await _save(ctx, verified=report)


# -- the switch ---------------------------------------------------------------------------------------
async def switch_placement(ctx: StepContext) -> None:
    """One catalog transaction: the new placement (a new version), the tier, and writes resumed."""
    target = ctx.params["target"]
    database, role, schema_name = layout_of(target["tier"]).names(ctx.tenant_id)
    async with ctx.catalog.acquire() as conn, conn.transaction():
        switched = await conn.fetchval(
            "UPDATE placements SET server_id = $2, database_name = $3, role_name = $4, schema_name = $5, "
            "tenant_revision = $6, version = version + 1, updated_at = now() "
            "WHERE tenant_id = $1 AND NOT (server_id = $2 AND database_name = $3 AND role_name = $4 "
            "AND schema_name IS NOT DISTINCT FROM $5) RETURNING 1",
            ctx.tenant_id, uuid.UUID(target["server_id"]), database, role, schema_name,
            ctx.params["source"]["revision"])
        await conn.execute("UPDATE tenants SET tier = $2, status = 'active', updated_at = now() "
                           "WHERE id = $1 AND status = 'maintenance'", ctx.tenant_id, target["tier"])
    if switched or "resumed_at" not in ctx.params:
        await ctx.announce(ctx.tenant_id)
        await _save(ctx, resumed_at=time.time())


# -- the old copy, and the target when a move is given up ---------------------------------------------
async def _drop_location(ctx: StepContext, which: str, keep_role: bool) -> None:
    side = await _side(ctx, which)
    await tier_manager(side.tier).drop_copy(side, keep_role)


async def remove_old_copy(ctx: StepContext) -> None:
    keep_role = _same_role(ctx)
    await _drop_location(ctx, "source", keep_role)
    if keep_role:
        target = await _side(ctx, "target")
        await tier_manager(target.tier).adopt_role(target)


async def discard_target(ctx: StepContext) -> None:
    """Undo of a failed move: the target copy goes, unless the tenant was switched to it."""
    if "target" not in ctx.params:
        return
    current = await ctx.catalog.fetchrow("SELECT server_id, database_name, schema_name FROM placements "
                                         "WHERE tenant_id = $1", ctx.tenant_id)
    target = ctx.params["target"]
    names = layout_of(target["tier"]).names(ctx.tenant_id)
    if current is not None and str(current["server_id"]) == target["server_id"] \
            and current["database_name"] == names.database and current["schema_name"] == names.schema:
        return
    await _drop_location(ctx, "target", keep_role=_same_role(ctx))


async def abort_move(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """Failure of a move: the tenant stays on (or returns to) its placement, active. Unless the
    placement was switched already, the steps after the plan are marked to be done again: writes
    resume now and the undo drops the target, so a retry (`POST /v1/operations/{id}/retry`) must
    make the target and pause writes again before it copies; resuming at the failed step would
    copy while writes go on, and a write between the comparison and the switch would be lost."""
    await conn.execute("UPDATE tenants SET status = 'active', updated_at = now() "
                       "WHERE id = $1 AND status = 'maintenance'", ctx.tenant_id)
    target = ctx.params.get("target")
    if target is None:
        return
    database, _, schema_name = layout_of(target["tier"]).names(ctx.tenant_id)
    await queue.redo_steps_unless_placed(conn, ctx.operation_id, "plan_move", tenant_id=ctx.tenant_id,
                                         server_id=uuid.UUID(target["server_id"]), database=database,
                                         schema=schema_name)

