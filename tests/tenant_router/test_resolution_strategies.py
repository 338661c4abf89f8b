"""Every way a request can name its tenant, against the real router: custom domains, RS256/ES256
tokens by key id with issuer and audience, the trusted internal header, and Redis being down."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from control_plane.embedded import free_port
from tenant_router.config import RouterConfig
from tests.conftest import Stack, create_active_tenant

SERVICE_TOKEN = "svc-" + uuid.uuid4().hex
ISSUER, AUDIENCE = "https://auth.example.test", "tenant-app"


def _pem_pair(private) -> tuple[str, str]:
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private_pem, public_pem


RSA_PRIVATE, RSA_PUBLIC = _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = _pem_pair(ec.generate_private_key(ec.SECP256R1()))


async def demo_client(config: RouterConfig) -> AsyncIterator[httpx.AsyncClient]:
    from litestar.testing import AsyncTestClient

    from demo_app.app import create_app

    async with AsyncTestClient(create_app(config)) as client:
        yield client


@pytest.fixture(scope="module")
async def strict_app(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    config = RouterConfig(
        catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key, redis_url=stack.settings.redis_url,
        jwt_secret=stack.settings.tenant_jwt_secret, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
        jwt_public_keys={"rsa-1": {"alg": "RS256", "key": RSA_PUBLIC}, "ec-1": {"alg": "ES256", "key": EC_PUBLIC}},
        service_token_sha256=frozenset({hashlib.sha256(SERVICE_TOKEN.encode()).hexdigest()}),
    )
    async for client in demo_client(config):
        yield client


def claims(tenant: dict, **extra) -> dict:
    return {"tenant_id": tenant["id"], "exp": int(time.time()) + 60, "iss": ISSUER, "aud": AUDIENCE, **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Host": "localhost"}


async def test_custom_domains_route_to_their_tenant(api, tenant_app):
    tenant = await create_active_tenant(api)
    domain = f"app.{tenant['slug']}.example.test"
    r = await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain.upper() + "."})
    assert r.status_code == 201, r.text
    assert r.json()["domain"] == domain
    assert (await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})).json()["code"] == "domain_taken"
    for bad in ("localhost", f"x.{tenant['slug']}.localhost", "no_underscores.example.com", "a..b.com", "-x.com"):
        r = await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": bad})
        assert r.status_code == 422 and r.json()["code"] == "domain_invalid", bad

    await tenant_app.post("/api/projects", json={"name": "by-domain"}, headers={"Host": f"{domain.upper()}.:443"})
    r = await tenant_app.get("/api/projects", headers={"Host": domain})
    assert [p["name"] for p in r.json()] == ["by-domain"]
    assert [d["domain"] for d in (await api.get(f"/v1/tenants/{tenant['id']}/domains")).json()["items"]] == [domain]

    assert (await api.delete(f"/v1/tenants/{tenant['id']}/domains/{domain}")).status_code == 204
    deadline = time.monotonic() + 1.0
    while (r := await tenant_app.get("/api/projects", headers={"Host": domain})).status_code != 404:
        assert time.monotonic() < deadline, "removing a domain must reach the router within a second"
    assert r.json()["code"] == "tenant_not_found"


async def test_asymmetric_tokens_by_key_id(api, strict_app):
    tenant = await create_active_tenant(api)
    good = [
        jwt.encode(claims(tenant), RSA_PRIVATE, algorithm="RS256", headers={"kid": "rsa-1"}),
        jwt.encode(claims(tenant), EC_PRIVATE, algorithm="ES256", headers={"kid": "ec-1"}),
    ]
    for token in good:
        r = await strict_app.get("/api/projects", headers=bearer(token))
        assert r.status_code == 200, r.text


async def test_forged_and_incomplete_tokens_are_refused(api, strict_app, stack: Stack):
    tenant = await create_active_tenant(api)
    import base64
    import hmac as _hmac
    import json

    def hs256_with(key: bytes, kid: str) -> str:  # what an attacker does with a public key
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        body = b64(json.dumps(claims(tenant)).encode())
        sig = b64(_hmac.new(key, f"{head}.{body}".encode(), "sha256").digest())
        return f"{head}.{body}.{sig}"

    secret = stack.settings.tenant_jwt_secret
    refused = {
        "hmac-signed-with-public-key": hs256_with(RSA_PUBLIC.encode(), "rsa-1"),
        "alg-none": jwt.encode(claims(tenant), None, algorithm="none"),
        "expired": jwt.encode(claims(tenant, exp=int(time.time()) - 600), secret, algorithm="HS256"),
        "wrong-audience": jwt.encode(claims(tenant, aud="someone-else"), secret, algorithm="HS256"),
        "wrong-issuer": jwt.encode(claims(tenant, iss="https://evil.test"), secret, algorithm="HS256"),
        "no-audience": jwt.encode({k: v for k, v in claims(tenant).items() if k != "aud"}, secret, algorithm="HS256"),
        "no-issuer": jwt.encode({k: v for k, v in claims(tenant).items() if k != "iss"}, secret, algorithm="HS256"),
        "unknown-kid": jwt.encode(claims(tenant), RSA_PRIVATE, algorithm="RS256", headers={"kid": "rsa-9"}),
        "rsa-key-with-ec-kid": jwt.encode(claims(tenant), RSA_PRIVATE, algorithm="RS256", headers={"kid": "ec-1"}),
    }
    for name, token in refused.items():
        r = await strict_app.get("/api/projects", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert r.json()["code"] == "invalid_token", name
    ok = jwt.encode(claims(tenant), secret, algorithm="HS256")
    assert (await strict_app.get("/api/projects", headers=bearer(ok))).status_code == 200


async def test_the_tenant_header_needs_a_service_credential(api, strict_app):
    tenant = await create_active_tenant(api)
    headers = {"Host": "localhost", "X-Tenant-ID": tenant["id"]}
    r = await strict_app.get("/api/projects", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "untrusted_tenant_header"
    r = await strict_app.get("/api/projects", headers={**headers, "X-Service-Token": "guess"})
    assert r.status_code == 401
    r = await strict_app.get("/api/projects", headers={**headers, "X-Service-Token": SERVICE_TOKEN})
    assert r.status_code == 200, r.text
    other = await create_active_tenant(api)
    r = await strict_app.get("/api/projects", headers={**headers, "X-Service-Token": SERVICE_TOKEN,
                                                        "Host": f"{other['slug']}.localhost"})
    assert r.status_code == 403 and r.json()["code"] == "tenant_mismatch"


async def test_routing_goes_on_with_redis_down(api, stack: Stack):
    tenant = await create_active_tenant(api)
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    async for client in demo_client(config):
        started = time.monotonic()
        r = await client.get("/api/projects", headers={"Host": f"{tenant['slug']}.localhost"})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 5
