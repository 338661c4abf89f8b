"""A slug that spells a UUID would be looked up as a tenant id wherever an admin addresses a tenant
"by id or slug", so it is refused (422 `slug_reserved`) in every spelling the id parser accepts."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.schemas import spells_a_uuid
from tests.conftest import unique_slug

# lowercase hex starting with a letter, so that each one passes the slug pattern
UUID_HEX = "abcdef0123456789abcdef0123456789"


@pytest.mark.parametrize("slug", [
    str(uuid.UUID(UUID_HEX)),  # canonical
    UUID_HEX,  # no dashes
    "a-bcdef0123456789abcdef0123456789",  # dashes anywhere: the parser drops them
    "ab-cd-ef-01-23-45-67-89-ab-cd-ef-01-23-45-67-89",
    "abcdef01-2345-6789-abcd-ef0123456789-",
])
async def test_uuid_shaped_slugs_are_refused(api, slug):
    assert spells_a_uuid(slug)
    response = await api.post("/v1/tenants", json={"slug": slug, "name": "x", "tier": "shared"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "slug_reserved"


async def test_an_uppercase_uuid_slug_is_refused_by_the_pattern(api):
    response = await api.post("/v1/tenants", json={"slug": UUID_HEX.upper(), "name": "x", "tier": "shared"})
    assert response.status_code == 422 and response.json()["code"] == "validation_failed", response.text


@given(st.uuids())
def test_every_uuid_spelling_is_recognised(value):
    for spelling in (str(value), value.hex, str(value).upper(), value.hex.upper(), "-".join(value.hex)):
        assert spells_a_uuid(spelling)


@pytest.mark.parametrize("slug", ["deadbeef", "cafe-babe", "abcdef0123456789abcdef012345678",
                                  "abcdef0123456789abcdef01234567890", "abcdef0123456789abcdef012345678g"])
def test_hex_looking_slugs_that_are_not_uuids_are_fine(slug):
    assert not spells_a_uuid(slug)


async def test_a_hex_slug_that_is_not_a_uuid_is_created_and_found_by_slug(api):
    slug = "cafe" + unique_slug("b")
    response = await api.post("/v1/tenants", json={"slug": slug, "name": "x", "tier": "shared"})
    assert response.status_code == 202, response.text
    assert (await api.get(f"/v1/tenants/{slug}")).json()["slug"] == slug
