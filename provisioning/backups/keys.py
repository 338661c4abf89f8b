"""Per-tenant backup data keys: made, wrapped, rotated, re-wrapped and destroyed.

A tenant's backups are encrypted under its own data key (32 random bytes, the key material of a
Tink AES256_GCM_HKDF_1MB key; see crypto.py). The catalog keeps every version of it, and only
wrapped: by AWS KMS (KMS_KEY_ID: GenerateDataKey makes and wraps it, Decrypt unwraps it) or by a
local master key kept in a file (the default for `make run`, under ./.data/), or, with
BACKUP_KMS_KEY_PER_TENANT, by a KMS key made for the tenant (tenant_kms.py). Each wrapping is
bound to the tenant id and key version (KMS encryption context; AES-GCM associated data locally),
so a wrapped key copied onto another tenant's row does not unwrap.

- New backups use the newest version; `rotate()` adds a version, and old versions are kept so
  old backups stay readable (each backup's header names its key version).
- `rewrap()` moves every live key under the keyring's current master key (a new local key file,
  or another KMS key); the data keys, and so the backups, do not change.
- `destroy()` erases a tenant's wrapped keys: every backup of the tenant becomes unreadable
  (crypto-shredding), wherever its objects are. The erased bytes can outlive the UPDATE in dead
  row versions until VACUUM, and in the catalog's WAL archive and base backups until those expire.

This module is the one owner of every statement on `tenant_keys`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisioning.backups.tenant_kms import TenantKmsError, TenantKmsKeys

DATA_KEY_BYTES = 32
_LOCAL_FORMAT = b"\x01"


class BackupKeyError(Exception):
    """Base of the key errors; messages name tenants and versions, never key material."""


class KeyNotFound(BackupKeyError):
    pass


class KeyDestroyed(BackupKeyError):
    """The tenant's keys were destroyed: its backups can no longer be decrypted, by design."""


class KeyUnavailable(BackupKeyError):
    """The master key that wrapped a data key is not configured, or refused to unwrap it."""


@dataclass(frozen=True)
class DataKey:
    """A plaintext data key. Never serialised or logged: the material is left out of its repr."""

    tenant_id: uuid.UUID
    version: int
    material: bytes = field(repr=False)


def _context(tenant_id: uuid.UUID, version: int) -> dict[str, str]:
    return {"tenantplane:tenant_id": str(tenant_id), "tenantplane:key_version": str(version)}


class KeyWrapper(Protocol):
    kind: str  # "local" | "kms" | "kms_tenant" (a KMS key of the tenant's own)
    key_id: str  # which master key: recorded with each wrapped key

    async def generate(self, context: dict[str, str]) -> tuple[bytes, bytes]: ...  # (plaintext, wrapped)
    async def wrap(self, plaintext: bytes, context: dict[str, str]) -> bytes: ...
    async def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes: ...


# -- a local master key ---------------------------------------------------------------------------------
def load_master_key(path: Path, *, create: bool = False) -> bytes:
    """32 bytes, base64 in a file of mode 600; made (exclusively, so two processes agree) when asked."""
    path = Path(path)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64encode(os.urandom(32)) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (ValueError, OSError) as exc:
        raise KeyUnavailable(f"the backup master key file {path} cannot be read") from exc
    if len(key) != 32:
        raise KeyUnavailable(f"the backup master key file {path} does not hold a 256-bit key")
    return key


class LocalKeyWrapper:
    """AES-256-GCM under a master key; the key id is a fingerprint of the key, so a data key
    names the master key it needs without revealing anything about it."""

    kind = "local"

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(master_key)
        self.key_id = "local:" + hashlib.sha256(b"tenantplane backup master key\x00" + master_key).hexdigest()[:24]

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> "LocalKeyWrapper":
        return cls(load_master_key(path, create=create))

    async def generate(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        plaintext = os.urandom(DATA_KEY_BYTES)
        return plaintext, await self.wrap(plaintext, context)

    async def wrap(self, plaintext: bytes, context: dict[str, str]) -> bytes:
        nonce = os.urandom(12)
        return _LOCAL_FORMAT + nonce + self._aead.encrypt(nonce, plaintext, _aad(context))

    async def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        if wrapped[:1] != _LOCAL_FORMAT:
            raise KeyUnavailable("unknown local wrapping format")
        try:
            return self._aead.decrypt(wrapped[1:13], wrapped[13:], _aad(context))
        except Exception as exc:  # cryptography's InvalidTag: wrong master key, or a row moved
            raise KeyUnavailable(f"the data key for {context['tenantplane:tenant_id']} "
                                 f"version {context['tenantplane:key_version']} does not unwrap") from exc


def _aad(context: dict[str, str]) -> bytes:
    return msgspec.json.encode(dict(sorted(context.items())))


# -- AWS KMS -----------------------------------------------------------------------------------------------
class KmsKeyWrapper:
    """Data keys from KMS GenerateDataKey (made inside KMS, returned wrapped and plain), unwrapped
    with Decrypt; the encryption context binds tenant and version. `client` is a boto3 KMS client
    (store.aws_client("kms")); boto3 is not imported here."""

    def __init__(self, client: Any, key_id: str, kind: str = "kms") -> None:
        self._client, self.key_id, self.kind = client, key_id, kind

    async def _call(self, method: str, what: str, **kwargs: Any) -> dict:
        try:
            return await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except Exception as exc:  # botocore's ClientError and connection errors
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            raise KeyUnavailable(f"KMS could not {what} ({code})") from exc

    async def generate(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        answer = await self._call("generate_data_key", "make a data key", KeyId=self.key_id, KeySpec="AES_256",
                                  EncryptionContext=context)
        return answer["Plaintext"], answer["CiphertextBlob"]

    async def wrap(self, plaintext: bytes, context: dict[str, str]) -> bytes:
        answer = await self._call("encrypt", "wrap a data key", KeyId=self.key_id, Plaintext=plaintext,
                                  EncryptionContext=context)
        return answer["CiphertextBlob"]

    async def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        answer = await self._call("decrypt", f"unwrap the data key of {context['tenantplane:tenant_id']}",
                                  KeyId=self.key_id, CiphertextBlob=wrapped, EncryptionContext=context)
        return answer["Plaintext"]


class Keyring:
    """The master key new keys are wrapped with, and the retired ones still accepted for unwrapping
    (until `rewrap()` has moved everything off them). `tenant_kms` reaches the tenants' own KMS keys
    (unwrapping what they wrapped, scheduling their deletion); with `per_tenant` new keys are made
    under them instead of `current`."""

    def __init__(self, current: KeyWrapper, retired: Sequence[KeyWrapper] = (), *,
                 tenant_kms: TenantKmsKeys | None = None, per_tenant: bool = False) -> None:
        if per_tenant and tenant_kms is None:
            raise ValueError("per-tenant KMS keys need a KMS client")
        self.current, self.tenant_kms, self.per_tenant = current, tenant_kms, per_tenant
        self._all = {(w.kind, w.key_id): w for w in (*retired, current)}

    def find(self, kind: str, key_id: str) -> KeyWrapper:
        if kind == "kms_tenant" and self.tenant_kms is not None:
            return KmsKeyWrapper(self.tenant_kms.client, key_id, kind)
        try:
            return self._all[(kind, key_id)]
        except KeyError:
            raise KeyUnavailable(f"the data key was wrapped by {kind} master key {key_id}, "
                                 "which is not configured") from None

    async def wrapper_for(self, catalog: Any, tenant_id: uuid.UUID) -> KeyWrapper:
        """What wraps a new key of the tenant's: its own KMS key (made on first use), or `current`."""
        if not self.per_tenant:
            return self.current
        assert self.tenant_kms is not None
        try:
            key_id = await self.tenant_kms.ensure(catalog, tenant_id)
        except TenantKmsError as exc:
            raise KeyUnavailable(f"the KMS key of tenant {tenant_id} is not available: {exc}") from exc
        return KmsKeyWrapper(self.tenant_kms.client, key_id, "kms_tenant")


def keyring_from_settings(*, kms_key_id: str | None, master_key_file: Path,
                          retired_master_key_files: Sequence[Path] = (),
                          kms_endpoint_url: str | None = None, kms_key_per_tenant: bool = False,
                          kms_deletion_window_days: int = 30, pause_at: str | None = None) -> Keyring:
    """KMS_KEY_ID when set, else the local master key file (made on first use). Retired local key
    files stay readable for unwrapping, e.g. while moving from a local key to KMS. With
    `kms_key_per_tenant` new keys go under each tenant's own KMS key; the tenants' KMS keys are
    reachable either way (a KMS client is made only when one is first needed), so keys made while
    the setting was on stay readable, and erasable, after it is turned off."""
    from provisioning.backups.store import aws_client

    def kms_client() -> Any:
        return aws_client("kms", endpoint_url=kms_endpoint_url)

    tenant_kms = TenantKmsKeys(kms_client, deletion_window_days=kms_deletion_window_days, pause_at=pause_at)
    per_tenant = {"tenant_kms": tenant_kms, "per_tenant": kms_key_per_tenant}
    retired: list[KeyWrapper] = [LocalKeyWrapper.from_file(p) for p in retired_master_key_files]
    if kms_key_id:
        if master_key_file.exists():
            retired.append(LocalKeyWrapper.from_file(master_key_file))
        return Keyring(KmsKeyWrapper(kms_client(), kms_key_id), retired, **per_tenant)
    return Keyring(LocalKeyWrapper.from_file(master_key_file, create=True), retired, **per_tenant)


# -- the catalog's tenant_keys ---------------------------------------------------------------------------------
Catalog = asyncpg.Pool | asyncpg.Connection


class TenantKeys:
    def __init__(self, catalog: Catalog, keyring: Keyring) -> None:
        self.catalog, self.keyring = catalog, keyring

    async def _unwrapped(self, tenant_id: uuid.UUID, row: asyncpg.Record) -> DataKey:
        if row["destroyed_at"] is not None or row["wrapped_key"] is None:
            raise KeyDestroyed(f"the backup keys of tenant {tenant_id} were destroyed; "
                               "its backups cannot be decrypted")
        wrapper = self.keyring.find(row["wrapper_kind"], row["wrapper_key_id"])
        material = await wrapper.unwrap(bytes(row["wrapped_key"]), _context(tenant_id, row["version"]))
        return DataKey(tenant_id, row["version"], material)

    async def get(self, tenant_id: uuid.UUID, version: int) -> DataKey:
        """The key a backup names in its header."""
        row = await self.catalog.fetchrow(
            "SELECT version, wrapped_key, wrapper_kind, wrapper_key_id, destroyed_at FROM tenant_keys "
            "WHERE tenant_id = $1 AND version = $2", tenant_id, version)
        if row is None:
            if await self._destroyed(tenant_id):
                raise KeyDestroyed(f"the backup keys of tenant {tenant_id} were destroyed; "
                                   "its backups cannot be decrypted")
            raise KeyNotFound(f"tenant {tenant_id} has no backup key version {version}")
        return await self._unwrapped(tenant_id, row)

    async def current(self, tenant_id: uuid.UUID) -> DataKey:
        """The newest version, for a new backup; made (version 1) for a tenant without one, so
        tenants created before keys existed get theirs on their first backup."""
        row = await self._newest(tenant_id)
        if row is None:
            await self._insert(tenant_id, 1)
            row = await self._newest(tenant_id)  # ours, or the one a concurrent caller made first
        return await self._unwrapped(tenant_id, row)

    async def rotate(self, tenant_id: uuid.UUID) -> DataKey:
        """A new version for new backups; the old ones stay for the backups made under them."""
        for _ in range(5):
            row = await self._newest(tenant_id)
            if row is not None and row["destroyed_at"] is not None:
                await self._unwrapped(tenant_id, row)  # raises KeyDestroyed
            version = (row["version"] if row else 0) + 1
            if await self._insert(tenant_id, version):
                return await self.get(tenant_id, version)
        raise BackupKeyError(f"could not rotate the backup key of tenant {tenant_id}: too many concurrent rotations")

    async def versions(self, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.catalog.fetch(
            "SELECT version, wrapper_kind, wrapper_key_id, created_at, wrapped_at, destroyed_at FROM tenant_keys "
            "WHERE tenant_id = $1 ORDER BY version", tenant_id)
        return [dict(r) for r in rows]

    async def rewrap(self, tenant_id: uuid.UUID | None = None) -> int:
        """Every live key (of one tenant, or all) not yet under the current master key (with per-tenant
        KMS keys: the tenant's own) is unwrapped and wrapped again under it; a row changed meanwhile
        is left for the next run."""
        shared = None if self.keyring.per_tenant else self.keyring.current
        rows = await self.catalog.fetch(
            "SELECT tenant_id, version, wrapped_key, wrapper_kind, wrapper_key_id FROM tenant_keys "
            "WHERE destroyed_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1) "
            "AND ($2::text IS NULL OR NOT (wrapper_kind = $2 AND wrapper_key_id = $3)) ORDER BY tenant_id, version",
            tenant_id, shared and shared.kind, shared and shared.key_id)
        moved = 0
        for row in rows:
            target = shared or await self.keyring.wrapper_for(self.catalog, row["tenant_id"])
            if (row["wrapper_kind"], row["wrapper_key_id"]) == (target.kind, target.key_id):
                continue
            context = _context(row["tenant_id"], row["version"])
            source = self.keyring.find(row["wrapper_kind"], row["wrapper_key_id"])
            wrapped = await target.wrap(await source.unwrap(bytes(row["wrapped_key"]), context), context)
            moved += int(await self.catalog.fetchval(
                "UPDATE tenant_keys SET wrapped_key = $3, wrapper_kind = $4, wrapper_key_id = $5, wrapped_at = now() "
                "WHERE tenant_id = $1 AND version = $2 AND wrapped_key = $6 AND destroyed_at IS NULL RETURNING 1",
                row["tenant_id"], row["version"], wrapped, target.kind, target.key_id, row["wrapped_key"]) or 0)
        return moved

    async def destroy(self, tenant_id: uuid.UUID) -> int:
        """Crypto-shredding: the wrapped keys are erased; the rows stay as the record of it, and
        stop any new key being made for the tenant."""
        changed = await self.catalog.fetch(
            "UPDATE tenant_keys SET wrapped_key = NULL, destroyed_at = now() "
            "WHERE tenant_id = $1 AND destroyed_at IS NULL RETURNING version", tenant_id)
        if not changed and not await self._destroyed(tenant_id):
            # a tenant that never had a key: a destroyed row still marks it, so none is made later
            await self.catalog.execute(
                "INSERT INTO tenant_keys (tenant_id, version, wrapped_key, wrapper_kind, wrapper_key_id, destroyed_at) "
                "VALUES ($1, 1, NULL, $2, $3, now()) ON CONFLICT DO NOTHING",
                tenant_id, self.keyring.current.kind, self.keyring.current.key_id)
        return len(changed)

    async def schedule_kms_deletion(self, tenant_id: uuid.UUID) -> tuple[str, Any] | None:
        """The tenant's own KMS key scheduled for deletion (after `destroy()`: what decides that the
        backups are unreadable is the catalog, not KMS); its id and deletion date, or None without one."""
        if self.keyring.tenant_kms is None:
            return None
        try:
            return await self.keyring.tenant_kms.schedule_deletion(self.catalog, tenant_id)
        except TenantKmsError as exc:
            raise KeyUnavailable(f"the KMS key of tenant {tenant_id} could not be scheduled for deletion: "
                                 f"{exc}") from exc

    async def _destroyed(self, tenant_id: uuid.UUID) -> bool:
        return bool(await self.catalog.fetchval(
            "SELECT 1 FROM tenant_keys WHERE tenant_id = $1 AND destroyed_at IS NOT NULL LIMIT 1", tenant_id))

    async def _newest(self, tenant_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.catalog.fetchrow(
            "SELECT version, wrapped_key, wrapper_kind, wrapper_key_id, destroyed_at FROM tenant_keys "
            "WHERE tenant_id = $1 ORDER BY version DESC LIMIT 1", tenant_id)

    async def _insert(self, tenant_id: uuid.UUID, version: int) -> bool:
        wrapper = await self.keyring.wrapper_for(self.catalog, tenant_id)
        _, wrapped = await wrapper.generate(_context(tenant_id, version))
        return bool(await self.catalog.fetchval(
            "INSERT INTO tenant_keys (tenant_id, version, wrapped_key, wrapper_kind, wrapper_key_id) "
            "SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS "
            "  (SELECT 1 FROM tenant_keys WHERE tenant_id = $1 AND destroyed_at IS NOT NULL) "
            "ON CONFLICT DO NOTHING RETURNING 1", tenant_id, version, wrapped, wrapper.kind, wrapper.key_id))
