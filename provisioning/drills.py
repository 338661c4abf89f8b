"""A restore drill of one backup, as an operation:

    drill_restore → drill_compare → drop_scratch → record_drill

The backup is restored into a scratch database of its own on the tenant's server, `tp_vd_<backup>`
(closed to PUBLIC before anything is in it; pg_restore logs in as the operation's unprivileged
restore role, steps/restore_roles.py), compared with the manifest recorded at dump time and
dropped; the backup records when it was verified, the result and how long the restore took (the
RTO a real restore of it can expect). The tenant is not touched. A shared-tier archive is loaded
into a copy of the template (tables without `tenant_id`), which must be at the backup's revision.
"""

from __future__ import annotations

import time
import uuid

import asyncpg
import msgspec

from contracts.identifiers import TEMPLATE_DATABASE, quote, tenant_schema, validate
from provisioning import queue
from provisioning.backing_up import read_backup
from provisioning.backups import manifest as manifests
from provisioning.backups import shared_archive
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import restore_roles
from provisioning.steps.guard import install_guard_functions
from provisioning.tiers.dedicated import ensure_template


def scratch_database(backup_id: uuid.UUID | str) -> str:
    return validate("tp_vd_" + uuid.UUID(str(backup_id)).hex)


def _backup(ctx: StepContext) -> uuid.UUID:
    return uuid.UUID(ctx.params["backup_id"])


async def _tier(ctx: StepContext) -> str:
    return await ctx.catalog.fetchval("SELECT tier FROM backups WHERE id = $1", _backup(ctx))


async def load_scratch(ctx: StepContext, scratch: str, bid: uuid.UUID, tier: str, owner: uuid.UUID) -> float:
    """A fresh scratch database `scratch` on the tenant's server (a half-loaded one from a crash is
    dropped), closed to PUBLIC before anything is in it, holding backup `bid` (of tenant `owner`,
    taken on `tier`); answers the seconds from the first byte read to the load's commit. Drills
    and clones (clones.py) load this way."""
    conn = await ctx.admin()
    await conn.execute(f"DROP DATABASE IF EXISTS {quote(scratch)} WITH (FORCE)")
    if tier == "shared":
        await ensure_template(ctx)
    await conn.execute(f"CREATE DATABASE {quote(scratch)} TEMPLATE "
                       f"{quote(TEMPLATE_DATABASE) if tier == 'shared' else 'template0'}")
    await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(scratch)} FROM PUBLIC")
    started = time.monotonic()
    _, chunks = await read_backup(ctx, bid, owner)
    server = await ctx.server()
    if tier == "shared":
        async with admin_connection(server, ctx.box, scratch) as target:
            await shared_archive.load_archive(chunks, target)  # type: ignore[arg-type]
    else:
        if tier == "schema":  # the schema's policies call the guard (steps/guard.py)
            async with admin_connection(server, ctx.box, scratch) as target:
                await install_guard_functions(target)
        # as the operation's unprivileged restore role (an archive is code); what it made is
        # then the admin's, who compares and copies it, and the role goes
        await restore_roles.load_dump(ctx, scratch, chunks, in_public=True)  # type: ignore[arg-type]
        await restore_roles.drop_restore_role(ctx, scratch, keep_objects=True)
    return round(time.monotonic() - started, 3)


async def drill_restore(ctx: StepContext) -> None:
    """A fresh scratch database each attempt; the time from the first byte read to the load's
    commit is what the drill reports."""
    seconds = await load_scratch(ctx, scratch_database(_backup(ctx)), _backup(ctx), await _tier(ctx), ctx.tenant_id)
    ctx.params["restore_seconds"] = seconds
    await queue.save_params(ctx.catalog, ctx.operation_id, {"restore_seconds": seconds})


async def drill_compare(ctx: StepContext) -> None:
    recorded, chunks = await read_backup(ctx, _backup(ctx), ctx.tenant_id)
    await chunks.aclose()  # type: ignore[attr-defined]
    schema = tenant_schema(ctx.tenant_id) if await _tier(ctx) == "schema" else "public"
    async with admin_connection(await ctx.server(), ctx.box, scratch_database(_backup(ctx))) as conn:
        if found := await manifests.differences(recorded, conn, schema, None):
            raise RuntimeError("the drill's copy differs from the backup's manifest: " + "; ".join(found))


async def drop_scratch(ctx: StepContext) -> None:
    server = await ctx.server_or_none()
    if server is not None:
        await (await ctx.admin(server)).execute(
            f"DROP DATABASE IF EXISTS {quote(scratch_database(_backup(ctx)))} WITH (FORCE)")
        await restore_roles.drop_restore_role(ctx, None, keep_objects=False)  # a load killed half-way


async def record_drill(ctx: StepContext) -> None:
    result = {"ok": True, "restore_seconds": ctx.params.get("restore_seconds"), "operation_id": str(ctx.operation_id)}
    await ctx.catalog.execute("UPDATE backups SET verified_at = now(), drill_result = $2::jsonb WHERE id = $1",
                              _backup(ctx), msgspec.json.encode(result).decode())


async def mark_drill_failed(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """A failed drill is the backup's news, not the tenant's: the tenant keeps its status."""
    result = {"ok": False, "error": await queue.operation_error(conn, ctx.operation_id),
              "operation_id": str(ctx.operation_id)}
    await conn.execute("UPDATE backups SET drill_result = $2::jsonb WHERE id = $1", _backup(ctx),
                       msgspec.json.encode(result).decode())
