"""The erasure step for a tenant's own KMS key (BACKUP_KMS_KEY_PER_TENANT; backups/tenant_kms.py):

    ... → destroy_data_keys → schedule_kms_key_deletion → ...

It runs after the wrapped data keys are erased from the catalog, which is what makes the backups
unreadable whatever KMS does with a key pending deletion (moto still decrypts with one; real KMS
refuses). ScheduleKeyDeletion gets the BACKUP_KMS_DELETION_WINDOW_DAYS waiting period, the alias
naming the tenant goes, and the key id and deletion date join the report's `data_key` entry. A rerun
finds the date recorded (or asks KMS for it when the crash came between the call and the record).
A tenant without a key of its own gets `"kms_key_id": null` in its entry.
"""

from __future__ import annotations

import msgspec

from provisioning.context import StepContext


async def schedule_kms_key_deletion(ctx: StepContext) -> None:
    keys = ctx.backups.keys
    scheduled = await keys.schedule_kms_deletion(ctx.tenant_id)
    if scheduled is None:
        entry = {"kms_key_id": None, "kms_deletion_date": None}
    else:
        key_id, when = scheduled
        entry = {"kms_key_id": key_id, "kms_deletion_date": when.isoformat(),
                 "kms_deletion_window_days": keys.keyring.tenant_kms.deletion_window_days,  # type: ignore[union-attr]
                 "kms_remains": "the tenant's KMS key, tagged with its id, until its deletion date; its alias "
                                "is deleted, and our catalog refuses its backups from now on"}
    # merged into the entry destroy_data_keys wrote (tenant_erasures.places is the report)
    await ctx.catalog.execute(
        "UPDATE tenant_erasures SET places = jsonb_set(places, '{data_key}', "
        "  coalesce(places -> 'data_key', '{}'::jsonb) || $2::jsonb) WHERE tenant_id = $1",
        ctx.tenant_id, msgspec.json.encode(entry).decode())
