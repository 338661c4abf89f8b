"""An admin's tenant key is an id or a slug; anything else names no tenant and never reaches SQL."""

from __future__ import annotations

import uuid

from control_plane.services.lookup import parse_tenant_key


def test_ids_in_any_spelling_uuid_accepts_are_ids():
    tenant_id = uuid.uuid4()
    for spelling in (str(tenant_id), str(tenant_id).upper(), tenant_id.hex, f"{{{tenant_id}}}"):
        assert parse_tenant_key(spelling) == tenant_id


def test_slugs_are_slugs():
    assert parse_tenant_key("acme") == "acme"
    assert parse_tenant_key("a-1") == "a-1"


def test_keys_that_are_neither_name_nothing():
    for key in ("", "a", "ACME", "1acme", "ac me", "acme\n", "ac\x00me", "a" * 64, "../etc", "acme;drop"):
        assert parse_tenant_key(key) is None, key
