"""Backing a tenant up, as an operation:

    start_backup → dump_to_store → verify_object → record_backup

The tier dumps in one snapshot (its manifest taken in the same one), the stream is encrypted under
the tenant's current data key (crypto.py: bound to tenant and backup id) and written to the store,
which publishes an object under its name only once it is whole and its digest recorded. The
object is then read back through the digest check and decrypted end to end before the backup is
listed `succeeded`: a backup that says so can be restored. A rerun of `dump_to_store` writes the
object again (the store replaces it whole) unless the one recorded is there complete; a backup
given up for good is marked `failed` and its object removed (`discard_object`).
"""

from __future__ import annotations

import dataclasses
import uuid

import asyncpg
import msgspec

from provisioning import queue
from provisioning.backups import crypto
from provisioning.backups.kit import BackupKit, object_key
from provisioning.backups.manifest import Manifest
from provisioning.context import StepContext
from provisioning.tiers import tier_manager


def backup_id(ctx: StepContext) -> uuid.UUID:
    return uuid.UUID(ctx.params["backup_id"])


def _kit(ctx: StepContext) -> BackupKit:
    return ctx.backups


async def start_backup(ctx: StepContext) -> None:
    await ctx.catalog.execute("UPDATE backups SET state = 'running', error = NULL WHERE id = $1 "
                              "AND state IN ('queued', 'failed')", backup_id(ctx))


async def dump_to_store(ctx: StepContext) -> None:
    kit, bid = _kit(ctx), backup_id(ctx)
    key = object_key(ctx.tenant_id, bid)
    recorded = ctx.params.get("object")
    if recorded is not None:
        found = await kit.store.head(key)
        if found is not None and found.complete and found.sha256 == recorded["sha256"]:
            return  # written and recorded by an earlier attempt
    data_key = await kit.keys.current(ctx.tenant_id)
    async with tier_manager(ctx.tier).dump(ctx) as dumped:
        stored = await kit.store.write(key, crypto.encrypt(dumped.chunks, data_key, bid, payload=dumped.payload))
        manifest = dumped.manifest
    assert manifest is not None
    obj = {"key": key, "size": stored.size, "sha256": stored.sha256, "key_version": data_key.version}
    await ctx.catalog.execute(
        "UPDATE backups SET object_key = $2, size_bytes = $3, digest = $4, key_version = $5, manifest = $6::jsonb, "
        "revision = $7, store = $8 WHERE id = $1", bid, key, stored.size, stored.sha256, data_key.version,
        msgspec.json.encode(manifest).decode(), manifest.revision, kit.store.kind)
    ctx.params["object"] = obj
    await queue.save_params(ctx.catalog, ctx.operation_id, {"object": obj})


async def read_backup(ctx: StepContext, bid: uuid.UUID, tenant_id: uuid.UUID) -> tuple[Manifest, object]:
    """(the manifest recorded at dump time, the decrypted payload stream) of a succeeded backup
    (or one being verified before it is listed): digest checked as it streams, then authenticated."""
    row = await ctx.catalog.fetchrow("SELECT tenant_id, object_key, digest, manifest FROM backups WHERE id = $1", bid)
    if row is None or row["object_key"] is None:
        raise LookupError(f"backup {bid} has no object")
    kit = _kit(ctx)
    found = await kit.store.head(row["object_key"])
    if found is None or not found.complete or found.sha256 != row["digest"]:
        raise RuntimeError(f"the object of backup {bid} is missing or not the one recorded")
    raw = row["manifest"]
    manifest = msgspec.json.decode(raw if isinstance(raw, (str, bytes)) else msgspec.json.encode(raw), type=Manifest)
    chunks = crypto.decrypt(kit.store.read(row["object_key"]), kit.keys.get, tenant_id=row["tenant_id"],
                            backup_id=bid)
    return manifest, chunks


async def verify_object(ctx: StepContext) -> None:
    """Read the whole object back: the store checks its digest, Tink authenticates every segment
    and the last one's end mark; nothing is kept."""
    _, chunks = await read_backup(ctx, backup_id(ctx), ctx.tenant_id)
    async for _ in chunks:  # type: ignore[attr-defined]
        pass


async def record_backup(ctx: StepContext) -> None:
    await ctx.catalog.execute("UPDATE backups SET state = 'succeeded', error = NULL, finished_at = now() "
                              "WHERE id = $1 AND state <> 'succeeded'", backup_id(ctx))


async def mark_backup_failed(conn: asyncpg.Connection, ctx: StepContext) -> None:
    """A backup given up: listed failed with the operation's error; the tenant is left as it is."""
    await conn.execute("UPDATE backups SET state = 'failed', finished_at = now(), error = $2 WHERE id = $1",
                       backup_id(ctx), await queue.operation_error(conn, ctx.operation_id))


async def discard_object(ctx: StepContext) -> None:
    """Undo of a failed backup: no object stays behind for a backup that is not listed succeeded."""
    await _kit(ctx).store.delete(object_key(ctx.tenant_id, backup_id(ctx)))


# -- a backup taken first by a move or a delete (BACKUP_BEFORE_MOVE, BACKUP_BEFORE_DELETE) -----------
async def _backup_first(ctx: StepContext, trigger: str) -> None:
    """The backup steps above, run as the first step of another operation: its backup row (trigger
    `pre_move` / `pre_delete`) is made once, with its id kept in the operation's params in the same
    transaction, so a rerun finishes that backup instead of starting another. The runner hands the
    kit only when the setting is on: without it there is nothing to do. A backup that fails fails
    the step (the move or delete does not go on without the backup it was asked to take)."""
    if ctx.backups is None:
        return
    bid = ctx.params.get("pre_backup_id")
    if bid is None:
        bid = str(uuid.uuid4())
        async with ctx.catalog.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO backups (id, tenant_id, tier, state, trigger, store, operation_id) "
                "VALUES ($1, $2, $3, 'queued', $4, $5, $6)", uuid.UUID(bid), ctx.tenant_id, ctx.tier, trigger,
                _kit(ctx).store.kind, ctx.operation_id)
            await queue.save_params(conn, ctx.operation_id, {"pre_backup_id": bid})
        ctx.params["pre_backup_id"] = bid
    own = dataclasses.replace(ctx, params={**ctx.params, "backup_id": bid})
    try:
        for step in (start_backup, dump_to_store, verify_object, record_backup):
            await step(own)
    except Exception as exc:
        await ctx.catalog.execute("UPDATE backups SET state = 'failed', finished_at = now(), error = $2 "
                                  "WHERE id = $1 AND state <> 'succeeded'", uuid.UUID(bid),
                                  f"{exc.__class__.__name__}: {exc}"[:1000])
        raise


async def backup_before_move(ctx: StepContext) -> None:
    await _backup_first(ctx, "pre_move")


async def backup_before_delete(ctx: StepContext) -> None:
    await _backup_first(ctx, "pre_delete")
