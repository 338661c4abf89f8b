"""The reconciler reports orphans, missing objects and revision drift, and drops nothing."""

from __future__ import annotations

import uuid

import asyncpg

from contracts import identifiers
from tests.conftest import Stack, create_active_tenant, unique_slug, wait_for


async def test_reconciler_reports_drift_and_orphans_without_dropping_them(api, stack: Stack):
    missing, drifting = await create_active_tenant(api), await create_active_tenant(api)
    r = await api.post("/v1/tenants", json={"slug": unique_slug("rs"), "name": "s", "tier": "schema"})
    schema_tenant = await wait_for(api, r.json()["tenant"]["id"], "active")
    stray = uuid.uuid4()
    admin = await asyncpg.connect(stack.pg.dsn())
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{identifiers.tenant_database(stray)}"')
        await admin.execute(f'CREATE ROLE "{identifiers.tenant_role(stray)}"')
        await admin.execute(f'DROP DATABASE "{identifiers.tenant_database(missing["id"])}" WITH (FORCE)')
        await catalog.execute("UPDATE placements SET tenant_revision = 'bogus' WHERE tenant_id = $1::uuid",
                              drifting["id"])
        schemas = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
        try:
            await schemas.execute(f'DROP SCHEMA "{identifiers.tenant_schema(schema_tenant["id"])}" CASCADE')
            await schemas.execute(f'CREATE SCHEMA "{identifiers.tenant_schema(stray)}"')
        finally:
            await schemas.close()

        report = (await api.post("/v1/reconciliation")).json()
        found = {(f["kind"], f["object"]) for f in report["findings"] if f["server"] == "local"}
        assert ("orphan_database", identifiers.tenant_database(stray)) in found
        assert ("orphan_role", identifiers.tenant_role(stray)) in found
        assert ("orphan_schema", identifiers.tenant_schema(stray)) in found
        assert ("missing_database", identifiers.tenant_database(missing["id"])) in found
        assert ("missing_schema", identifiers.tenant_schema(schema_tenant["id"])) in found
        assert ("revision_drift", identifiers.tenant_database(drifting["id"])) in found
        assert "local" in report["servers_checked"]
        assert (await api.get("/v1/reconciliation")).json()["findings"] == report["findings"]

        # it reported; it did not drop
        assert await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", identifiers.tenant_database(stray))
        assert await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", identifiers.tenant_role(stray))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{identifiers.tenant_database(stray)}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{identifiers.tenant_role(stray)}"')
        schemas = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
        await schemas.execute(f'DROP SCHEMA IF EXISTS "{identifiers.tenant_schema(stray)}"')
        await schemas.close()
        await admin.close()
        await catalog.close()


async def test_reconciler_reports_what_a_restore_clone_or_drill_left_behind(api, stack: Stack):
    """tp_rs_ / tp_ro_ / tp_vd_ databases, tp_so_ schemas and tp_restore_ roles with no open
    operation to own them."""
    tenant, backup, operation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    role = identifiers.restore_role(operation)
    databases = [f"tp_rs_{tenant.hex}", f"tp_ro_{tenant.hex}", f"tp_vd_{backup.hex}"]
    admin = await asyncpg.connect(stack.pg.dsn())
    schemas = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
    try:
        for name in databases:
            await admin.execute(f'CREATE DATABASE "{name}"')
        await schemas.execute(f'CREATE SCHEMA "tp_so_{tenant.hex}"')
        await admin.execute(f'CREATE ROLE "{role}" NOLOGIN')

        report = (await api.post("/v1/reconciliation")).json()
        found = {f["object"]: f for f in report["findings"] if f["kind"] == "restore_leftover"}
        for name in [*databases, f"tp_so_{tenant.hex}"]:
            assert name in found, (name, report["findings"])
        assert found[f"tp_rs_{tenant.hex}"]["tenant_id"] == str(tenant)
        assert "restore or a clone" in found[f"tp_rs_{tenant.hex}"]["detail"]
        assert str(backup) in found[f"tp_vd_{backup.hex}"]["detail"]
        assert found[f"tp_so_{tenant.hex}"]["tenant_id"] == str(tenant)
        assert str(operation) in found[role]["detail"] and found[role]["tenant_id"] is None
        # reported, not dropped
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = ANY($1)", databases) == 3
    finally:
        for name in databases:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await schemas.execute(f'DROP SCHEMA IF EXISTS "tp_so_{tenant.hex}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await schemas.close()
        await admin.close()


def test_an_open_restore_clone_or_drill_owns_its_temporary_names():
    from provisioning.reconcile import _busy_names

    tenant, cloned, backup = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ops = [uuid.uuid4() for _ in range(3)]
    busy = _busy_names([{"id": ops[0], "kind": "restore_tenant", "tenant_id": tenant, "backup_id": str(backup)},
                        {"id": ops[1], "kind": "clone_tenant", "tenant_id": cloned, "backup_id": str(backup)},
                        {"id": ops[2], "kind": "verify_backup", "tenant_id": tenant, "backup_id": str(backup)}])
    assert {f"tp_rs_{tenant.hex}", f"tp_ro_{tenant.hex}", f"tp_so_{tenant.hex}", f"tp_rs_{cloned.hex}",
            f"tp_vd_{backup.hex}", *(identifiers.restore_role(o) for o in ops)} <= busy
    assert _busy_names([{"kind": "move_tenant", "tenant_id": tenant, "backup_id": None}]) == set()
