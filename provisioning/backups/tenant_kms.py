"""Per-tenant KMS keys (BACKUP_KMS_KEY_PER_TENANT): a tenant's data keys are made and wrapped under
a KMS key of its own, tagged `tenantplane:tenant_id=<id>` and aliased `alias/tenantplane/<id>`, so
erasing the tenant can also ScheduleKeyDeletion that key.

KMS's CreateKey takes no idempotency token, so a crash between CreateKey and CreateAlias could leave
a key nobody knows of. The catalog's `tenant_kms_keys` row (this module owns every statement on it)
closes that window (this module writes every row of it; the reconciler reads it to report an
erased tenant whose key is not scheduled for deletion): it is written *before* CreateKey with `key_id` NULL ("a key may exist"), and the
key id is recorded right after CreateKey's answer, before the alias. A rerun that finds the row
without a key id looks for the alias, then for a key carrying the tenant's tag (ListKeys +
ListResourceTags: only on this crash path, never for a first creation), and adopts it; a key made by
a concurrent loser is scheduled for deletion at once and logged. No key is orphaned unreported.

Our catalog, not KMS, decides whether a tenant's keys are usable: a key pending deletion still
decrypts in moto, and the wrapped data keys are erased from `tenant_keys` anyway (keys.py).

`client` makes a boto3 KMS client (store.aws_client("kms")) on first use, so a deployment that never
had a per-tenant key opens none; boto3 is not imported here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import uuid
from collections.abc import Callable
from typing import Any

import structlog

ALIAS_PREFIX = "alias/tenantplane/"
TAG_KEY = "tenantplane:tenant_id"
MIN_WINDOW_DAYS, MAX_WINDOW_DAYS = 7, 30  # what ScheduleKeyDeletion accepts
# test hooks (TENANTPLANE_TEST_PAUSE_BEFORE_STEP): inside a step, where a SIGKILL leaves a key unrecorded
PAUSE_POINTS = ("kms:record_key", "kms:create_alias")
_GONE = ("NotFoundException",)
_ALREADY_PENDING = ("KMSInvalidStateException",)

log = structlog.get_logger(__name__)

Catalog = Any  # an asyncpg pool or connection, or control_plane's DriverSQL: anything with fetchrow/execute


class TenantKmsError(Exception):
    """KMS could not be reached or refused a call; names the call and KMS's code, never key material."""


def alias_of(tenant_id: uuid.UUID) -> str:
    return f"{ALIAS_PREFIX}{tenant_id}"


def _code(exc: BaseException) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__


class TenantKmsKeys:
    def __init__(self, client: Callable[[], Any], *, deletion_window_days: int = MAX_WINDOW_DAYS,
                 pause_at: str | None = None) -> None:
        if not MIN_WINDOW_DAYS <= deletion_window_days <= MAX_WINDOW_DAYS:
            raise ValueError(f"the KMS deletion window must be {MIN_WINDOW_DAYS}-{MAX_WINDOW_DAYS} days")
        self._make_client, self._client = client, None
        self.deletion_window_days = deletion_window_days
        self._pause_at = pause_at if pause_at in PAUSE_POINTS else None  # off unless a test sets it

    async def _maybe_pause(self, point: str, tenant_id: uuid.UUID) -> None:
        # Test hook only: announce and block, so a test can SIGKILL the worker at this point.
        if self._pause_at == point:
            print(f"PAUSED before {point} tenant={tenant_id}", file=sys.stdout, flush=True)
            await asyncio.Event().wait()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def _call(self, method: str, *, allow: tuple[str, ...] = (), **kwargs: Any) -> dict | None:
        """One KMS call in a thread; None when KMS answers with one of the `allow`ed error codes."""
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except Exception as exc:  # botocore's ClientError and connection errors
            if _code(exc) in allow:
                return None
            raise TenantKmsError(f"KMS {method} failed ({_code(exc)})") from exc

    # -- making (or finding) the tenant's key ---------------------------------------------------------------
    async def ensure(self, catalog: Catalog, tenant_id: uuid.UUID) -> str:
        """The tenant's KMS key id (an ARN), made on first use; safe to rerun after a crash anywhere."""
        row = await catalog.fetchrow("SELECT key_id, aliased_at, deletion_date FROM tenant_kms_keys "
                                     "WHERE tenant_id = $1", tenant_id)
        if row is not None and row["deletion_date"] is not None:
            raise TenantKmsError(f"the KMS key of tenant {tenant_id} is scheduled for deletion")
        if row is not None and row["key_id"] is not None:
            if row["aliased_at"] is None:
                await self._alias(catalog, tenant_id, row["key_id"])
            return row["key_id"]
        if row is None:
            # the intent, durable before CreateKey: whoever comes later knows a key may exist
            await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2) "
                                  "ON CONFLICT DO NOTHING", tenant_id, alias_of(tenant_id))
            key_id, found = None, []
        else:  # an earlier attempt (or a concurrent one) may have made a key before recording it
            key_id, found = await self._find_made(tenant_id)
        if key_id is None:
            key_id = await self._create(tenant_id)
        await self._maybe_pause("kms:record_key", tenant_id)  # made, not yet recorded, no alias
        recorded = await catalog.fetchval(
            "UPDATE tenant_kms_keys SET key_id = coalesce(key_id, $2) WHERE tenant_id = $1 RETURNING key_id",
            tenant_id, key_id)
        # only the recorded key is ever used; any other made for the tenant (ours, when a concurrent
        # caller recorded its key first; a second crashed attempt's) goes. A key in flight elsewhere
        # is left to its maker, which finds another key recorded and discards its own.
        for other in sorted({key_id, *found} - {recorded}):
            await self._discard(tenant_id, other)
        await self._maybe_pause("kms:create_alias", tenant_id)  # recorded, no alias yet
        await self._alias(catalog, tenant_id, recorded)
        return recorded

    async def _create(self, tenant_id: uuid.UUID) -> str:
        answer = await self._call(
            "create_key", Description=f"tenantplane backup keys of tenant {tenant_id}", KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT", Tags=[{"TagKey": TAG_KEY, "TagValue": str(tenant_id)}])
        assert answer is not None
        return answer["KeyMetadata"]["Arn"]

    async def _find_made(self, tenant_id: uuid.UUID) -> tuple[str | None, list[str]]:
        """The key a crashed attempt made (the alias's target, else the first live key with the
        tenant's tag), and every live key with the tag."""
        found = await self._call("describe_key", allow=_GONE, KeyId=alias_of(tenant_id))
        tagged = await self._tagged(tenant_id)
        if found is not None:
            return found["KeyMetadata"]["Arn"], tagged
        return (tagged[0] if tagged else None), tagged

    async def _tagged(self, tenant_id: uuid.UUID) -> list[str]:
        """Every enabled key tagged with the tenant's id (a scan of the account's keys: crash path only)."""
        keys: list[str] = []
        for key_id, _ in await self.account_keys():
            if await self.tenant_tag(key_id) == str(tenant_id):
                meta = await self.describe(key_id)
                if meta and meta["KeyState"] == "Enabled":
                    keys.append(meta["Arn"])
        return sorted(keys)

    # -- the account's keys (the crash path above, and the reconciler: kms_leftovers.py) ----------------------
    async def account_keys(self) -> list[tuple[str, str]]:
        """(KeyId, KeyArn) of every key of the account in the client's region (ListKeys, every page)."""
        keys: list[tuple[str, str]] = []
        marker: dict[str, str] = {}
        while True:
            page = await self._call("list_keys", Limit=1000, **marker)
            assert page is not None
            keys += [(entry["KeyId"], entry["KeyArn"]) for entry in page.get("Keys", [])]
            if not page.get("Truncated"):
                return keys
            marker = {"Marker": page["NextMarker"]}

    async def tenant_tag(self, key_id: str) -> str | None:
        """The value of the key's `tenantplane:tenant_id` tag (ListResourceTags, every page), or None:
        no such tag, or a key this role may not read the tags of (another team's is not one we made)."""
        marker: dict[str, str] = {}
        while True:
            page = await self._call("list_resource_tags", allow=_GONE + ("AccessDeniedException",), KeyId=key_id,
                                    **marker)
            if page is None:
                return None
            for tag in page.get("Tags", []):
                if tag.get("TagKey") == TAG_KEY:
                    return tag.get("TagValue")
            if not page.get("Truncated"):
                return None
            marker = {"Marker": page["NextMarker"]}

    async def describe(self, key_id: str) -> dict | None:
        """The key's metadata (Arn, KeyState, DeletionDate, ...); None for a key gone meanwhile."""
        meta = await self._call("describe_key", allow=_GONE, KeyId=key_id)
        return meta["KeyMetadata"] if meta else None

    async def _alias(self, catalog: Catalog, tenant_id: uuid.UUID, key_id: str) -> None:
        name = alias_of(tenant_id)
        found = await self._call("describe_key", allow=_GONE, KeyId=name)
        if found is None:
            await self._call("create_alias", allow=("AlreadyExistsException",), AliasName=name, TargetKeyId=key_id)
        elif found["KeyMetadata"]["Arn"] != key_id:
            # the alias points at another key of ours (say, one re-made by hand): the recorded key wins
            await self._call("update_alias", AliasName=name, TargetKeyId=key_id)
        await catalog.execute("UPDATE tenant_kms_keys SET aliased_at = coalesce(aliased_at, now()) "
                              "WHERE tenant_id = $1", tenant_id)

    async def _discard(self, tenant_id: uuid.UUID, key_id: str) -> None:
        """A surplus key (a lost race, a second crashed attempt): never used to wrap anything."""
        log.warning("backup.kms_key.surplus_scheduled_for_deletion", tenant_id=str(tenant_id), kms_key_id=key_id)
        await self._schedule(key_id, MIN_WINDOW_DAYS)

    async def _schedule(self, key_id: str, days: int) -> dt.datetime:
        """ScheduleKeyDeletion unless the key is pending deletion already (a rerun after a crash that
        came between the call and its record): KMS's deletion date either way. Asked first, because
        KMS refuses a second schedule and moto would silently move the date."""
        meta = await self._call("describe_key", KeyId=key_id)
        assert meta is not None
        found = meta["KeyMetadata"]
        if found["KeyState"] == "PendingDeletion":
            return found["DeletionDate"]
        answer = await self._call("schedule_key_deletion", allow=_ALREADY_PENDING, KeyId=found["KeyId"],
                                  PendingWindowInDays=days)
        if answer is None:  # scheduled by someone else meanwhile
            again = await self._call("describe_key", KeyId=key_id)
            if again is None or "DeletionDate" not in again["KeyMetadata"]:
                raise TenantKmsError(f"KMS refused to schedule the deletion of {key_id}")
            return again["KeyMetadata"]["DeletionDate"]
        return answer["DeletionDate"]

    # -- deletion -----------------------------------------------------------------------------------------------
    async def schedule_deletion(self, catalog: Catalog, tenant_id: uuid.UUID) -> tuple[str, dt.datetime] | None:
        """ScheduleKeyDeletion of the tenant's key with the configured window, and its alias removed;
        the key id and deletion date, recorded (a rerun answers the recorded ones). None: the tenant
        never had a key of its own (a crashed creation's unrecorded key is found and scheduled too)."""
        row = await catalog.fetchrow("SELECT key_id, deletion_date FROM tenant_kms_keys WHERE tenant_id = $1",
                                     tenant_id)
        if row is None:
            return None
        if row["deletion_date"] is not None:
            return row["key_id"], row["deletion_date"]
        key_id = row["key_id"]
        if key_id is None:  # a crashed creation: whatever it made goes
            key_id, found = await self._find_made(tenant_id)
            for extra in sorted(set(found) - {key_id}):
                await self._discard(tenant_id, extra)
        if key_id is None:  # the intent was recorded, but CreateKey never answered: nothing was made
            await catalog.execute("DELETE FROM tenant_kms_keys WHERE tenant_id = $1 AND key_id IS NULL", tenant_id)
            return None
        when = await self._schedule(key_id, self.deletion_window_days)
        await self._call("delete_alias", allow=_GONE, AliasName=alias_of(tenant_id))
        await catalog.execute(
            "UPDATE tenant_kms_keys SET key_id = $2, deletion_scheduled_at = coalesce(deletion_scheduled_at, now()), "
            "deletion_date = $3 WHERE tenant_id = $1", tenant_id, key_id, when)
        return key_id, when


async def recorded_keys(catalog: Catalog) -> list[Any]:
    """Every row of tenant_kms_keys (tenant_id, key_id or None for a creation's intent, deletion_date)."""
    return list(await catalog.fetch("SELECT tenant_id, key_id, deletion_date FROM tenant_kms_keys ORDER BY tenant_id"))
