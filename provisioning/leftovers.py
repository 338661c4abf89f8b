"""What is still found of deleted and erased tenants outside the catalog, for the reconciler.

- an erased tenant (its erasure completed): backup objects in the store under its prefix, and
  Redis keys that name it (by id in the key, or an alias whose value is its id);
- a deleted tenant (no erasure asked): Redis keys that name it; its backups and keys are kept on
  purpose until their retention ends (a deletion can be undone), so the store is not searched;
- both: what a server still holds of it (a database, role, schema or shared rows: the server check
  sees an orphan, or a restore's leftover, with the tenant's id) is reported as theirs.

Findings are `erased_leftover` / `deleted_leftover`, with the place in `server` (a server's name,
"store" or "redis") and what kind of thing in `object`: never a slug, domain or key value (an
alias key's name holds the slug or domain, so only its kind is named). A tenant whose erasure is
queued or running is skipped (the saga is removing what it has); one whose erasure failed counts as
deleted. A store or Redis that cannot be
reached, or fails, is reported unreachable: nothing is concluded about it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import msgspec
from redis.exceptions import RedisError

from provisioning.announcements import redis_client
from provisioning.backups.objects import BackupStore, StoreError
from provisioning.findings import Finding
from provisioning.inventory import store_prefix

log = logging.getLogger("tenantplane.reconciler")

ERASED, DELETED = "erased_leftover", "deleted_leftover"
STORE_TIMEOUT = REDIS_TIMEOUT = 120.0  # seconds one place's whole search may take, then it is unreachable
STORE_LISTINGS_AT_ONCE = 8
_ALIAS_PREFIX = "tenantplane:alias:"
_ALIAS_BATCH = 500  # alias values read per MGET
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TTL_SAMPLE = 100  # keys per finding whose time to live is asked


class Gone(msgspec.Struct, frozen=True):
    """The tenants checked for leftovers, by id (as text)."""
    erased: frozenset[str]
    deleted: frozenset[str]

    def kind_of(self, tenant_id: str | None) -> str | None:
        return ERASED if tenant_id in self.erased else DELETED if tenant_id in self.deleted else None

    def what(self, tenant_id: str) -> str:
        return "an erased" if tenant_id in self.erased else "a deleted"


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    erased_tenants: int = 0
    deleted_tenants: int = 0


class Leftovers(msgspec.Struct, frozen=True, kw_only=True):
    findings: list[Finding]
    checked: Checked
    places_checked: list[str]
    places_unreachable: list[str]


# erased: the erasure completed; deleted: no erasure, or one that failed or was cancelled (nothing
# removes what it left); a tenant whose erasure is queued or running is the saga's to clean
_GONE = """
SELECT t.id::text AS id, e.completed_at IS NOT NULL AS erased FROM tenants t
LEFT JOIN tenant_erasures e ON e.tenant_id = t.id
WHERE t.status = 'deleted' AND (e.completed_at IS NOT NULL OR NOT EXISTS (
    SELECT 1 FROM operations o WHERE o.tenant_id = t.id AND o.kind = 'erase_tenant'
                                 AND o.state IN ('queued', 'running')))
"""


async def gone_tenants(catalog: asyncpg.Pool | asyncpg.Connection) -> Gone:
    rows = await catalog.fetch(_GONE)
    return Gone(erased=frozenset(r["id"] for r in rows if r["erased"]),
                deleted=frozenset(r["id"] for r in rows if not r["erased"]))


def attribute(findings: Iterable[Finding], gone: Gone) -> list[Finding]:
    """A server's orphan or restore leftover that names a deleted or erased tenant is that tenant's
    leftover: same server and object, the original kind kept at the head of the detail."""
    out = []
    for f in findings:
        kind = gone.kind_of(f.tenant_id) if f.kind.startswith("orphan_") or f.kind == "restore_leftover" else None
        if kind is None:
            out.append(f)
            continue
        detail = f"{f.kind} of {gone.what(f.tenant_id)} tenant" + (f": {f.detail}" if f.detail else "")  # type: ignore[arg-type]
        out.append(msgspec.structs.replace(f, kind=kind, detail=detail))
    return out


async def store_leftovers(store: BackupStore, erased: Iterable[str]) -> list[Finding]:
    """The objects under each erased tenant's prefix (one listing each, a few at a time)."""
    gate = asyncio.Semaphore(STORE_LISTINGS_AT_ONCE)

    async def one(tenant_id: str) -> Finding | None:
        prefix = store_prefix(uuid.UUID(tenant_id))
        async with gate:
            objects = await store.list(prefix)
        if not objects:
            return None
        incomplete = sum(1 for o in objects if not o.complete)
        return Finding(kind=ERASED, server="store", object=prefix, tenant_id=tenant_id,
                       detail=f"{len(objects)} object(s), {sum(o.size for o in objects)} bytes, of an erased tenant "
                              f"still in the {store.kind} store" + (f" ({incomplete} incomplete)" if incomplete else ""))

    found = await asyncio.gather(*(one(t) for t in sorted(erased)))
    return [f for f in found if f is not None]


def _kind_of_key(key: str) -> str:
    """What a key is, without what it holds after its kind (an alias key names a slug or domain):
    `placement`, `alias:slug`, `alias:domain`, `ratelimit`, ..."""
    parts = key.split(":")
    return ":".join(parts[1:3]) if key.startswith(_ALIAS_PREFIX) else (parts[1] if len(parts) > 1 else "key")


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


async def _keys_by_tenant(redis: Any, wanted: frozenset[str]) -> dict[tuple[str, str], list[str]]:
    """One SCAN over our keys (never KEYS: it blocks the server): a key whose name holds a wanted id,
    and an alias whose value is one (read in batches)."""
    found: dict[tuple[str, str], list[str]] = {}
    aliases: list[str] = []
    async for raw in redis.scan_iter(match="tenantplane:*", count=1000):
        key = _text(raw)
        if key.startswith(_ALIAS_PREFIX):
            aliases.append(key)
        for tenant_id in {m for m in _UUID.findall(key) if m in wanted}:
            found.setdefault((tenant_id, _kind_of_key(key)), []).append(key)
    for start in range(0, len(aliases), _ALIAS_BATCH):
        batch = aliases[start:start + _ALIAS_BATCH]
        for key, value in zip(batch, await redis.mget(batch)):
            if value is not None and (tenant_id := _text(value)) in wanted:
                found.setdefault((tenant_id, _kind_of_key(key)), []).append(key)
    return found


async def _expiry(redis: Any, keys: list[str]) -> str:
    """When the keys go by themselves (a router's copies and rate-limit windows carry a TTL)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys[:_TTL_SAMPLE]:
            pipe.pttl(key)
        ttls = [t for t in await pipe.execute() if t != -2]  # -2: gone since the scan
    if not ttls:
        return "gone since they were found"
    if any(t == -1 for t in ttls):
        return "at least one never expires"
    return f"they expire within {max(ttls, default=0) / 1000:.0f} s"


async def redis_leftovers(redis: Any, gone: Gone) -> list[Finding]:
    found = await _keys_by_tenant(redis, gone.erased | gone.deleted)
    out = []
    for (tenant_id, kind), keys in sorted(found.items()):
        out.append(Finding(kind=gone.kind_of(tenant_id) or DELETED, server="redis", object=kind, tenant_id=tenant_id,
                           detail=f"{len(keys)} {kind} key(s) of {gone.what(tenant_id)} tenant; "
                                  f"{await _expiry(redis, keys)}"))
    return out


async def find_leftovers(gone: Gone, *, open_store: Callable[[], BackupStore] | None,
                         redis_url: str | None) -> Leftovers:
    """Every place that is configured is searched; one that fails is listed unreachable (and logged
    by its error's type only: a message could hold a URL with credentials)."""
    findings: list[Finding] = []
    checked: list[str] = []
    unreachable: list[str] = []
    if open_store is not None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                findings += await store_leftovers(open_store(), gone.erased)
            checked.append("store")
        except (StoreError, OSError, TimeoutError) as exc:
            log.warning("reconciler: the backup store could not be searched (%s)", type(exc).__name__)
            unreachable.append("store")
    if redis_url:
        redis = redis_client(redis_url)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                findings += await redis_leftovers(redis, gone)
            checked.append("redis")
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("reconciler: Redis could not be searched (%s)", type(exc).__name__)
            unreachable.append("redis")
        finally:
            await redis.aclose()
    return Leftovers(findings=findings, checked=Checked(erased_tenants=len(gone.erased),
                                                         deleted_tenants=len(gone.deleted)),
                     places_checked=checked, places_unreachable=unreachable)
