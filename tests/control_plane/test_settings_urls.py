"""A catalog URL that is not PostgreSQL's is refused when settings are built, by its variable and
without echoing the URL (it carries the password)."""

from __future__ import annotations

import secrets

import pytest

from control_plane.settings import Settings, SettingsError

BASE = {"SECRET_KEY": secrets.token_urlsafe(48)}


@pytest.mark.parametrize("url", ["notaurl", "mysql://u:hunter2@h/db", "http://u:hunter2@h/db", " postgresql://u@h/db"])
def test_a_catalog_url_that_is_not_postgresql_is_named(url):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "CATALOG_DATABASE_URL": url})
    message = str(caught.value)
    assert message.startswith("CATALOG_DATABASE_URL must be a postgresql:// URL"), message
    assert "hunter2" not in message and url.strip() not in message


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/db", "postgres://u@h/db", "postgresql+asyncpg://u@h/db"])
def test_postgresql_urls_pass(url):
    assert Settings.from_env({**BASE, "CATALOG_DATABASE_URL": url}).catalog_database_url == url
