"""BACKUP_KMS_KEY_PER_TENANT and BACKUP_KMS_DELETION_WINDOW_DAYS: off and 30 by default, reach the
workers, and a window KMS would refuse is refused at start with the variable named."""

from __future__ import annotations

import secrets

import pytest

from control_plane.settings import Settings, SettingsError

BASE = {"CATALOG_DATABASE_URL": "postgresql://u:p@localhost/db", "SECRET_KEY": secrets.token_urlsafe(48)}


def test_defaults_and_the_workers_get_them():
    default = Settings.from_env(BASE).worker_config()
    assert (default.backup_kms_key_per_tenant, default.backup_kms_deletion_window_days) == (False, 30)
    on = Settings.from_env({**BASE, "BACKUP_KMS_KEY_PER_TENANT": "true",
                            "BACKUP_KMS_DELETION_WINDOW_DAYS": "7"}).worker_config()
    assert (on.backup_kms_key_per_tenant, on.backup_kms_deletion_window_days) == (True, 7)


@pytest.mark.parametrize("window", ["6", "31", "0", "-7"])
def test_a_window_kms_would_refuse_is_refused(window: str):
    with pytest.raises(SettingsError, match=f"BACKUP_KMS_DELETION_WINDOW_DAYS must be 7-30.*not {window}"):
        Settings.from_env({**BASE, "BACKUP_KMS_DELETION_WINDOW_DAYS": window})


def test_a_window_that_is_not_a_number_is_refused():
    with pytest.raises(SettingsError, match="backup_kms_deletion_window_days"):
        Settings.from_env({**BASE, "BACKUP_KMS_DELETION_WINDOW_DAYS": "thirty"})
