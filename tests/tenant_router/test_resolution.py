"""Host parsing and token checks, with no I/O."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenant_router.config import RouterConfig
from tenant_router.errors import InvalidToken
from tenant_router.resolution import (
    key_from_host,
    normalise_host,
    tenant_id_from_claims,
    verified_claims,
)

SECRET = "s" * 40
slugs = st.from_regex(r"[a-z][a-z0-9-]{1,62}", fullmatch=True)


def slug_from_host(host: str | None, apex: str) -> str | None:
    key = key_from_host(host, apex)
    return key.value if key is not None and key.kind == "slug" else None


def tenant_id_from_token(token: str, secret: str | None, leeway: int) -> uuid.UUID:
    """What the router does with a bearer token, with only an HS256 secret configured."""
    config = RouterConfig(catalog_dsn="", secret_key="", jwt_secret=secret, jwt_leeway_seconds=leeway)
    return tenant_id_from_claims(verified_claims(token, config))


@pytest.mark.parametrize(("host", "expected"), [
    ("acme.example.com", "acme"),
    ("ACME.Example.COM", "acme"),
    ("acme.example.com.", "acme"),
    ("acme.example.com:8443", "acme"),
    ("example.com", None),
    ("a.b.example.com", None),
    ("acme.example.com.evil.net", None),
    ("acmeexample.com", None),
    ("x.example.com", None),  # too short for a slug
    ("", None),
    (None, None),
    ("'; drop table tenants;--.example.com", None),
    ("acme\x00.example.com", None),
])
def test_slug_from_host(host, expected):
    assert slug_from_host(host, "example.com") == expected


@given(slug=slugs, port=st.integers(1, 65535), upper=st.booleans(), dot=st.booleans())
def test_any_slug_survives_normalisation(slug, port, upper, dot):
    host = f"{slug}.example.com" + ("." if dot else "")
    host = (host.upper() if upper else host) + f":{port}"
    assert slug_from_host(host, "Example.com") == slug


@given(st.text(max_size=80))
def test_arbitrary_hosts_never_raise(text):
    result = slug_from_host(text, "example.com")
    assert result is None or normalise_host(text).endswith(".example.com")


def token(claims: dict, key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_valid_token_yields_the_tenant_id():
    tid = uuid.uuid4()
    assert tenant_id_from_token(token({"tenant_id": str(tid), "exp": time.time() + 60}), SECRET, 0) == tid


@pytest.mark.parametrize("bad", [
    token({"tenant_id": str(uuid.uuid4()), "exp": time.time() - 60}),  # expired
    token({"tenant_id": str(uuid.uuid4())}),  # no exp
    token({"exp": time.time() + 60}),  # no tenant_id
    token({"tenant_id": str(uuid.uuid4()), "exp": time.time() + 60}, key="another-secret" * 4),
    jwt.encode({"tenant_id": str(uuid.uuid4()), "exp": time.time() + 60}, None, algorithm="none"),
    "not.a.token",
    "",
])
def test_bad_tokens_are_refused(bad):
    with pytest.raises(InvalidToken):
        tenant_id_from_token(bad, SECRET, 0)


def test_tokens_refused_when_no_secret_configured():
    with pytest.raises(InvalidToken):
        tenant_id_from_token(token({"tenant_id": str(uuid.uuid4()), "exp": time.time() + 60}), None, 0)
