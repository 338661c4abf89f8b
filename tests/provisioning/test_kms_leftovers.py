"""The reconciler lists the KMS account (moto's KMS over HTTP) with per-tenant KMS keys: a key tagged
with a tenant id that `tenant_kms_keys` does not record is an `orphan_kms_key` (a crashed creation's
says so), an erased tenant's key not pending deletion an `erased_leftover`, a recorded key KMS does
not list a `missing_kms_key`; keys pending deletion and keys that are not ours are no findings; KMS
unreachable is the place `kms` unreachable, and without per-tenant keys KMS is not searched."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from control_plane.embedded import free_port
from provisioning import leftovers
from provisioning.backups.keys import Keyring, LocalKeyWrapper, TenantKeys
from provisioning.backups.store import aws_client
from provisioning.backups.tenant_kms import TAG_KEY, TenantKmsKeys, alias_of
from provisioning.kms_leftovers import account, kms_leftovers
from provisioning.reconcile import reconcile
from provisioning.sealing import SecretBox
from tests.conftest import SECRET_KEY
from tests.provisioning.backups.conftest import catalog, moto_endpoint, new_tenant  # noqa: F401 (fixtures)


@pytest.fixture
def kms(moto_endpoint: str) -> Any:  # noqa: F811
    return aws_client("kms", endpoint_url=moto_endpoint)


def tagged_key(kms: Any, tenant: uuid.UUID) -> str:
    """A key with the tenant's tag that nothing records: what a creation killed after CreateKey leaves."""
    return kms.create_key(Tags=[{"TagKey": TAG_KEY, "TagValue": str(tenant)}])["KeyMetadata"]["Arn"]


async def erase(catalog: asyncpg.Pool, tenant: uuid.UUID) -> None:  # noqa: F811
    await catalog.execute("UPDATE tenants SET status = 'deleted' WHERE id = $1", tenant)
    await catalog.execute("INSERT INTO tenant_erasures (tenant_id, completed_at) VALUES ($1, now())", tenant)


def mine(findings: list, *tenants: uuid.UUID) -> set[tuple[str, str, str | None]]:
    wanted = {str(t) for t in tenants}
    return {(f.kind, f.object, f.tenant_id) for f in findings if f.tenant_id in wanted}


async def test_the_kms_account_is_compared_with_the_catalog(catalog: asyncpg.Pool, kms: Any, tmp_path):  # noqa: F811
    tenant_kms = TenantKmsKeys(lambda: kms, deletion_window_days=7)
    keys = TenantKeys(catalog, Keyring(LocalKeyWrapper.from_file(tmp_path / "master.key", create=True),
                                       tenant_kms=tenant_kms, per_tenant=True))
    known, crashed, by_hand, discarded, erased, erased_orphan, missing = [await new_tenant(catalog) for _ in range(7)]
    await keys.current(known)  # made and recorded: no finding
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias) VALUES ($1, $2)", crashed, alias_of(crashed))
    crashed_key = tagged_key(kms, crashed)
    by_hand_key = tagged_key(kms, by_hand)
    kms.schedule_key_deletion(KeyId=tagged_key(kms, discarded).rsplit("/", 1)[-1], PendingWindowInDays=7)  # pending: no finding
    kms.create_key(Tags=[{"TagKey": "team", "TagValue": "billing"}])  # not ours
    await keys.current(erased)
    await keys.destroy(erased)
    erased_key, _ = await keys.schedule_kms_deletion(erased)
    await erase(catalog, erased)
    orphan_of_erased = tagged_key(kms, erased_orphan)
    await erase(catalog, erased_orphan)
    ghost = f"arn:aws:kms:us-east-1:123456789012:key/{uuid.uuid4()}"
    await catalog.execute("INSERT INTO tenant_kms_keys (tenant_id, alias, key_id) VALUES ($1, $2, $3)",
                          missing, alias_of(missing), ghost)

    gone = await leftovers.gone_tenants(catalog)
    found = await kms_leftovers(tenant_kms, catalog, gone)
    everyone = (known, crashed, by_hand, discarded, erased, erased_orphan, missing)
    assert mine(found, *everyone) == {
        ("orphan_kms_key", crashed_key, str(crashed)), ("orphan_kms_key", by_hand_key, str(by_hand)),
        ("erased_leftover", orphan_of_erased, str(erased_orphan)), ("missing_kms_key", ghost, str(missing))}
    details = {f.tenant_id: f.detail for f in found}
    assert "did not record it" in details[str(crashed)] and "records no KMS key" in details[str(by_hand)]
    assert details[str(erased_orphan)].startswith("orphan_kms_key of an erased tenant")
    assert all(f.server == "kms" for f in found)

    # the erased tenant's key taken out of its pending deletion (CancelKeyDeletion leaves it Disabled)
    kms.cancel_key_deletion(KeyId=erased_key.rsplit("/", 1)[-1])
    found = await kms_leftovers(tenant_kms, catalog, await leftovers.gone_tenants(catalog))
    [leftover] = [f for f in found if f.tenant_id == str(erased)]
    assert (leftover.kind, leftover.server, leftover.object) == ("erased_leftover", "kms", "kms_key")
    assert "Disabled" in leftover.detail and erased_key in leftover.detail

    # the crashed creation adopted by the next use of the tenant's keys: its finding goes
    await keys.current(crashed)
    assert not mine(await kms_leftovers(tenant_kms, catalog, await leftovers.gone_tenants(catalog)), crashed)


async def test_the_reconciler_lists_kms_only_with_per_tenant_keys_and_reports_it_unreachable(
        catalog: asyncpg.Pool, kms: Any):  # noqa: F811
    tenant = await new_tenant(catalog)
    arn = tagged_key(kms, tenant)
    box = SecretBox(SECRET_KEY)
    report = await reconcile(catalog, box, tenant_kms=TenantKmsKeys(lambda: kms))
    assert "kms" in report.places_checked and ("orphan_kms_key", arn, str(tenant)) in mine(report.findings, tenant)
    assert account(False) is None and isinstance(account(True), TenantKmsKeys)  # listed with per-tenant keys only
    report = await reconcile(catalog, box, tenant_kms=None)
    assert "kms" not in report.places_checked + report.places_unreachable and not mine(report.findings, tenant)

    down = TenantKmsKeys(lambda: aws_client("kms", endpoint_url=f"http://127.0.0.1:{free_port()}"))
    report = await reconcile(catalog, box, tenant_kms=down)
    assert report.places_unreachable == ["kms"] and "kms" not in report.places_checked and not report.clean
    assert not mine(report.findings, tenant)
