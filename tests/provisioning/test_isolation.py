"""What the database server itself enforces between dedicated tenants."""

from __future__ import annotations

import asyncpg
import pytest

from contracts import identifiers
from contracts.credentials import role_password
from tests.conftest import Stack, create_active_tenant


def role_dsn(stack: Stack, tenant_id: str, database: str) -> dict:
    role = identifiers.tenant_role(tenant_id)
    return {"host": "127.0.0.1", "port": stack.pg.port, "user": role, "database": database,
            "password": role_password(stack.settings.secret_key, role)}


async def test_a_tenant_role_reaches_its_own_database_only(api, stack: Stack):
    a = await create_active_tenant(api)
    b = await create_active_tenant(api)
    db_a, db_b = identifiers.tenant_database(a["id"]), identifiers.tenant_database(b["id"])

    own = await asyncpg.connect(**role_dsn(stack, a["id"], db_a))
    try:
        assert await own.fetchval("SELECT count(*) FROM projects") >= 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await own.execute("CREATE TABLE sneaky (id int)")
    finally:
        await own.close()

    for database in (db_b, identifiers.TEMPLATE_DATABASE):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(**role_dsn(stack, a["id"], database))

    wrong_password = {**role_dsn(stack, a["id"], db_a), "password": "guess"}
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(**wrong_password)


async def test_public_has_no_connect_or_temp_on_tenant_databases(api, stack: Stack):
    a = await create_active_tenant(api)
    b = await create_active_tenant(api)
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        for tenant in (a, b):
            name = identifiers.tenant_database(tenant["id"])
            acl = await admin.fetchval("SELECT datacl FROM pg_database WHERE datname = $1", name)
            assert acl is not None, "a NULL ACL means the defaults, which let PUBLIC connect"
            public = await admin.fetch(
                "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a "
                "WHERE d.datname = $1 AND a.grantee = 0", name)
            assert public == []
            grantees = await admin.fetch(
                "SELECT r.rolname FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee "
                "WHERE d.datname = $1 AND a.privilege_type = 'CONNECT'", name)
            assert identifiers.tenant_role(tenant["id"]) in {g["rolname"] for g in grantees}
            other = b if tenant is a else a
            assert identifiers.tenant_role(other["id"]) not in {g["rolname"] for g in grantees}
    finally:
        await admin.close()


async def test_no_secret_in_the_catalog(stack: Stack, api):
    await create_active_tenant(api)
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        rows = []
        for table in ("database_servers", "placements", "operations", "operation_steps", "audit_log",
                      "admin_api_keys"):
            rows += [str(dict(r)) for r in await catalog.fetch(f"SELECT * FROM {table}")]
        dump = "\n".join(rows)
    finally:
        await catalog.close()
    assert stack.pg.password not in dump
    assert stack.settings.admin_token not in dump
    assert stack.settings.secret_key not in dump
