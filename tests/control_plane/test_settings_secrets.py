"""Weak secrets are refused when settings are built (every process builds them before it starts):
the error names the environment variable, never a struct field."""

from __future__ import annotations

import secrets

import pytest

from control_plane.settings import Settings, SettingsError

GOOD = {"CATALOG_DATABASE_URL": "postgresql://u@h/db", "SECRET_KEY": secrets.token_urlsafe(48),
        "ADMIN_TOKEN": "tpa_" + secrets.token_urlsafe(32), "TENANT_JWT_SECRET": secrets.token_urlsafe(48)}
FIELDS = {"SECRET_KEY": "secret_key", "ADMIN_TOKEN": "admin_token", "TENANT_JWT_SECRET": "tenant_jwt_secret"}
WEAK = ["x", "secret", "a" * 31, "x" * 64, "ab" * 32, "0123456" * 6, "CHANGE-ME-" + secrets.token_hex(16),
        "replace_me_" + secrets.token_hex(16)]


@pytest.mark.parametrize("var", sorted(FIELDS))
@pytest.mark.parametrize("value", WEAK)
def test_weak_secrets_are_refused_by_name(var, value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**GOOD, var: value})
    message = str(caught.value)
    assert message.startswith(var) and FIELDS[var] not in message, message
    assert value not in message  # the secret itself is never echoed


def test_generated_secrets_pass():
    settings = Settings.from_env(GOOD)
    assert settings.admin_token == GOOD["ADMIN_TOKEN"]


def test_optional_secrets_may_be_unset():
    settings = Settings.from_env({k: v for k, v in GOOD.items() if k in ("CATALOG_DATABASE_URL", "SECRET_KEY")})
    assert settings.admin_token is None and settings.tenant_jwt_secret is None
