"""`tenantctl router-key` and `tenantctl catalog-reader`: a router that holds neither SECRET_KEY nor
the catalog's own login still routes every tier, and what it holds can read nothing else."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from contracts.credentials import role_password
from contracts.router_key import RouterKeys
from demo_app.app import create_app
from tenant_router.config import RouterConfig
from tests.conftest import Stack, unique_slug, wait_for
from tests.control_plane.test_cli_each import tenantctl


async def _tenant(api, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug(), "name": "Reader", "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


async def test_a_router_with_only_the_router_key_and_the_reader_login_routes_every_tier(api, stack: Stack):
    code, key = await tenantctl(stack, "router-key")
    assert code == 0, key
    key = key.strip()
    assert stack.settings.secret_key not in key
    code, reader_url = await tenantctl(stack, "catalog-reader")
    assert code == 0, reader_url
    reader_url = reader_url.strip()
    assert reader_url.startswith("postgresql://tp_catalog_reader:")

    tenants = [await _tenant(api, tier) for tier in ("dedicated", "schema", "shared")]
    config = RouterConfig(catalog_dsn=reader_url, router_key=key, redis_url=stack.settings.redis_url,
                          apex="localhost", jwt_secret=stack.settings.tenant_jwt_secret)
    assert config.secret_key is None
    async with AsyncTestClient(create_app(config)) as client:
        for t in tenants:
            name = f"via-reader-{uuid.uuid4().hex[:8]}"
            r = await client.post("/api/projects", json={"name": name}, headers={"Host": f"{t['slug']}.localhost"})
            assert r.status_code == 201, (t["tier"], r.text)
            r = await client.get("/api/projects", headers={"Host": f"{t['slug']}.localhost"})
            assert r.status_code == 200 and name in [p["name"] for p in r.json()], (t["tier"], r.text)

    reader = await asyncpg.connect(reader_url)
    try:
        assert await reader.fetchval("SELECT count(*) FROM tenants WHERE id = $1", uuid.UUID(tenants[0]["id"])) == 1
        for sql in ("SELECT admin_password_sealed FROM database_servers", "SELECT name FROM tenants",
                    "SELECT * FROM admin_api_keys", "SELECT * FROM audit_log", "SELECT * FROM operations",
                    "SELECT * FROM tenants"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.fetch(sql)
        for sql in ("UPDATE placements SET version = version + 1", "DELETE FROM tenant_domains",
                    "INSERT INTO tenants (id, slug, name, tier, status) VALUES (gen_random_uuid(), 'x', 'x', 'shared', 'active')"):
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
                await reader.execute(sql)
    finally:
        await reader.close()

    # a second run replaces the password: the URL printed before stops working
    code, newer = await tenantctl(stack, "catalog-reader")
    assert code == 0 and newer.strip() != reader_url
    with pytest.raises(asyncpg.InvalidPasswordError):
        await (await asyncpg.connect(reader_url)).close()


async def test_bad_role_names_are_refused(stack: Stack):
    code, out = await tenantctl(stack, "catalog-reader", "--role", 'x"; DROP TABLE tenants; --')
    assert code == 2 and "--role" in out


def test_the_router_key_is_the_secret_keys_router_half():
    secret = "s" * 48
    keys = RouterKeys.from_secret_key(secret)
    assert RouterKeys.parse(keys.encode()) == keys
    assert keys.role_password("tp_role_x") == role_password(secret, "tp_role_x")
    config = RouterConfig.from_env({"CATALOG_DATABASE_URL": "postgresql://x/y", "ROUTER_KEY": keys.encode()})
    assert config.secret_key is None and config.keys() == keys
    assert RouterConfig(catalog_dsn="x", secret_key=secret).keys() == keys


@pytest.mark.parametrize("bad", ["", "tprk1", "tprk1.a.b", "tprk2.AAAA.AAAA", "tprk1.%%%.%%%", "s" * 48])
def test_a_malformed_router_key_is_refused_without_showing_it(bad: str):
    with pytest.raises(ValueError) as info:
        RouterConfig.from_env({"CATALOG_DATABASE_URL": "postgresql://x/y", "ROUTER_KEY": bad})
    assert "ROUTER_KEY" in str(info.value) or "SECRET_KEY" in str(info.value)
    assert bad not in str(info.value) or bad in ("", "tprk1")  # (the prefix is in the hint)


def test_neither_key_names_both_variables():
    with pytest.raises(ValueError, match="ROUTER_KEY .* or SECRET_KEY"):
        RouterConfig.from_env({"CATALOG_DATABASE_URL": "postgresql://x/y"})
