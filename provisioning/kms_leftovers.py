"""What the KMS account holds of tenants that the catalog does not account for, for the reconciler
(only with BACKUP_KMS_KEY_PER_TENANT: the caller passes the tenants' KMS keys then).

The account's keys are listed (ListKeys, every page). A key the catalog records (`tenant_kms_keys`)
is known without asking for its tags; every other key's tags are read (ListResourceTags, a few at a
time), and one tagged `tenantplane:tenant_id` is ours:

- `orphan_kms_key` (server `kms`, object the key's ARN): a key tagged with a tenant id that no row
  records, not pending deletion. Most likely a creation killed between CreateKey and its record
  (the next use of that tenant's keys, or its erasure, adopts or schedules it: tenant_kms.py), or
  one in flight right now; else a key made by hand or by another catalog on the same account. Of a
  deleted or erased tenant it is that tenant's leftover (leftovers.attribute), like a server's orphan.
- `erased_leftover` (server `kms`, object `kms_key`): an erased tenant's recorded key that KMS holds
  in another state than PendingDeletion (its deletion cancelled, say); the catalog's own record of a
  deletion never scheduled is reported apart (server `catalog`, reconcile.py).
- `missing_kms_key` (server `kms`): a key the catalog records for a tenant, not scheduled for
  deletion, that KMS does not list: the data keys it wrapped cannot be unwrapped.

A key pending deletion (a surplus one discarded, an erased tenant's) is no finding. Findings name
keys by ARN and tenants by id, never key material or tags other than ours. KMS unreachable, or
failing, is reported by the caller as the place `kms` unreachable: nothing is concluded about it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from provisioning.backups.tenant_kms import TenantKmsKeys, recorded_keys
from provisioning.findings import Finding
from provisioning.leftovers import ERASED, Gone, attribute

PLACE = "kms"
TIMEOUT = 120.0  # seconds the whole search may take, then KMS is reported unreachable
TAG_READS_AT_ONCE = 8
_PENDING = "PendingDeletion"


def account(per_tenant: bool) -> TenantKmsKeys | None:
    """The KMS account the reconciler lists: only with per-tenant KMS keys on; its client
    (AWS_ENDPOINT_URL_KMS honoured) is made on the first round; boto3 is imported only when it is on."""
    if not per_tenant:
        return None
    from provisioning.backups.store import aws_client

    return TenantKmsKeys(functools.partial(aws_client, "kms"))


async def kms_leftovers(kms: TenantKmsKeys, catalog: Any, gone: Gone) -> list[Finding]:
    rows = await recorded_keys(catalog)
    recorded = {r["key_id"]: str(r["tenant_id"]) for r in rows if r["key_id"] is not None}
    scheduled = {r["key_id"] for r in rows if r["key_id"] is not None and r["deletion_date"] is not None}
    intents = {str(r["tenant_id"]) for r in rows if r["key_id"] is None}
    listed = await kms.account_keys()
    gate = asyncio.Semaphore(TAG_READS_AT_ONCE)

    async def one(key_id: str, arn: str) -> Finding | None:
        async with gate:
            if arn in recorded:
                tenant_id = recorded[arn]
                if tenant_id not in gone.erased:
                    return None
                meta = await kms.describe(key_id)
                if meta is None or meta["KeyState"] == _PENDING:
                    return None
                return Finding(kind=ERASED, server=PLACE, object="kms_key", tenant_id=tenant_id,
                               detail=f"the KMS key {arn} of an erased tenant is {meta['KeyState']}, "
                                      "not pending deletion")
            tenant_id = await kms.tenant_tag(key_id)
            if tenant_id is None:
                return None  # not one of ours
            meta = await kms.describe(key_id)
        if meta is None or meta["KeyState"] == _PENDING:
            return None
        why = ("made by a creation that did not record it (killed between CreateKey and its record, or still "
               "running); the next use of the tenant's keys, or its erasure, adopts or schedules it"
               if tenant_id in intents else "tagged with a tenant id the catalog records no KMS key for")
        return Finding(kind="orphan_kms_key", server=PLACE, object=arn, tenant_id=tenant_id,
                       detail=f"a {meta['KeyState']} KMS key {why}")

    found = [f for f in await asyncio.gather(*(one(k, a) for k, a in listed)) if f is not None]
    arns = {arn for _, arn in listed}
    # ListKeys sees the client's region only: a recorded key of another region is not judged
    region = getattr(getattr(kms.client, "meta", None), "region_name", None)
    found += [Finding(kind="missing_kms_key", server=PLACE, object=arn, tenant_id=tenant_id,
                      detail="the catalog records this KMS key for the tenant and KMS does not list it: "
                             "the data keys it wrapped cannot be unwrapped")
              for arn, tenant_id in sorted(recorded.items())
              if arn not in arns and arn not in scheduled and region in (None, _region_of(arn))]
    return attribute(found, gone)


def _region_of(arn: str) -> str | None:
    parts = arn.split(":")  # arn:aws:kms:<region>:<account>:key/<id>
    return parts[3] if len(parts) >= 6 else None
