"""A backup and an in-place restore on each tier, through the API and the session's worker: the
data comes back as it was at dump time, the restored copy is hardened like a fresh one, and the
tenant serves through the router again."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.identifiers import SCHEMAS_DATABASE, SHARED_DATABASE
from tests.conftest import Stack, unique_slug, wait_for


async def create_tenant(api: httpx.AsyncClient, tier: str) -> dict:
    response = await api.post("/v1/tenants", json={"slug": unique_slug("bk"), "name": "Backup", "tier": tier})
    assert response.status_code == 202, response.text
    return await wait_for(api, response.json()["tenant"]["id"], "active")


async def finished(api: httpx.AsyncClient, operation_id: str, timeout: float = 90) -> dict:
    for _ in range(int(timeout / 10) + 1):
        body = (await api.get(f"/v1/operations/{operation_id}", params={"wait": 10})).json()
        if body["state"] in ("succeeded", "failed"):
            return body
    raise AssertionError(f"operation {operation_id} did not end: {body}")


async def projects(app: httpx.AsyncClient, slug: str) -> list[str]:
    response = await app.get("/api/projects", headers={"Host": f"{slug}.localhost"})
    assert response.status_code == 200, response.text
    return sorted(p["name"] for p in response.json())


async def add_project(app: httpx.AsyncClient, slug: str, name: str) -> None:
    response = await app.post("/api/projects", json={"name": name}, headers={"Host": f"{slug}.localhost"})
    assert response.status_code == 201, response.text


async def take_backup(api: httpx.AsyncClient, tenant_id: str, **body: str) -> dict:
    response = await api.post(f"/v1/tenants/{tenant_id}/backups", json=body or None)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["backup"]["state"] == "queued"
    op = await finished(api, accepted["operation_id"])
    assert op["state"] == "succeeded", op
    return (await api.get(f"/v1/backups/{accepted['backup']['id']}")).json()


async def restore(api: httpx.AsyncClient, tenant_id: str, backup_id: str) -> dict:
    response = await api.post(f"/v1/tenants/{tenant_id}/restore", json={"backup_id": backup_id})
    assert response.status_code == 202, response.text
    return await finished(api, response.json()["operation_id"])


async def hardened(stack: Stack, tenant: dict) -> None:
    """PUBLIC cannot connect to a dedicated tenant's database; on the schema tier PUBLIC has no
    USAGE on the schema; on the shared tier every tenant table forces row-level security."""
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        if tenant["tier"] == "dedicated":
            db = identifiers.tenant_database(tenant["id"])
            assert not await admin.fetchval("SELECT has_database_privilege('public', $1, 'CONNECT')", db)
            assert await admin.fetchval("SELECT has_database_privilege($2, $1, 'CONNECT')", db,
                                        identifiers.tenant_role(tenant["id"]))
            return
    finally:
        await admin.close()
    if tenant["tier"] == "schema":
        conn = await asyncpg.connect(stack.pg.dsn(SCHEMAS_DATABASE))
        try:
            schema = identifiers.tenant_schema(tenant["id"])
            assert not await conn.fetchval("SELECT has_schema_privilege('public', $1, 'USAGE')", schema)
            assert await conn.fetchval("SELECT has_schema_privilege($2, $1, 'USAGE')", schema,
                                       identifiers.tenant_role(tenant["id"]))
            # every table answers only transactions bound to this tenant (contracts/guard.py)
            guarded = await conn.fetch(
                "SELECT c.relname, c.relrowsecurity, pg_get_expr(p.polqual, p.polrelid) AS qual FROM pg_class c "
                "LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = 'tenant_isolation' "
                "WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r' AND c.relname <> 'alembic_version'",
                schema)
            assert guarded and all(g["relrowsecurity"] and "bound_tenant" in (g["qual"] or "") and
                                   tenant["id"] in g["qual"] for g in guarded), guarded
        finally:
            await conn.close()
        return
    conn = await asyncpg.connect(stack.pg.dsn(SHARED_DATABASE))
    try:
        flags = await conn.fetch("SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
                                 "JOIN information_schema.columns i ON i.table_name = c.relname "
                                 "AND i.table_schema = 'public' AND i.column_name = 'tenant_id' "
                                 "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'")
        assert flags and all(f["relrowsecurity"] and f["relforcerowsecurity"] for f in flags)
        quals = await conn.fetch("SELECT pg_get_expr(p.polqual, p.polrelid) AS qual FROM pg_policy p "
                                 "WHERE p.polname = 'tenant_isolation' AND p.polrelid = ANY($1::regclass[])",
                                 [f"public.{f['relname']}" for f in flags])
        assert len(quals) == len(flags) and all("bound_tenant" in q["qual"] for q in quals), quals
    finally:
        await conn.close()


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_restore_in_place_brings_back_the_data_of_dump_time(api, tenant_app, stack, tier):
    tenant = await create_tenant(api, tier)
    slug = tenant["slug"]
    await add_project(tenant_app, slug, "kept-1")
    await add_project(tenant_app, slug, "kept-2")
    backup = await take_backup(api, tenant["id"], label="before the change")
    assert backup["state"] == "succeeded" and backup["tier"] == tier and backup["size_bytes"] > 0
    assert backup["label"] == "before the change" and backup["revision"] == tenant["tenant_revision"]
    assert {t["name"]: t["rows"] for t in backup["tables"]}.get("projects") == 2
    await add_project(tenant_app, slug, "written-after")
    version_before = await placement_version(stack, tenant["id"])

    op = await restore(api, tenant["id"], backup["id"])
    assert op["state"] == "succeeded", op
    assert [s["name"] for s in op["steps"]][:3] == ["plan_restore", "pause_writes", "fetch_and_load"]
    after = await wait_for(api, tenant["id"], "active")
    assert after["tenant_revision"] == tenant["tenant_revision"]
    assert await placement_version(stack, tenant["id"]) > version_before  # routers drop the old pools
    assert await projects(tenant_app, slug) == ["kept-1", "kept-2"]
    await add_project(tenant_app, slug, "written-after-restore")  # writes resumed, sequences moved on
    assert await projects(tenant_app, slug) == ["kept-1", "kept-2", "written-after-restore"]
    await hardened(stack, tenant)
    await no_leftovers(stack, tenant["id"])


async def placement_version(stack: Stack, tenant_id: str) -> int:
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        return await conn.fetchval("SELECT version FROM placements WHERE tenant_id = $1::uuid", tenant_id)
    finally:
        await conn.close()


async def no_leftovers(stack: Stack, tenant_id: str) -> None:
    """Neither the staging nor the old copy outlives the restore."""
    hex_id = tenant_id.replace("-", "")
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        assert not await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = ANY($1)",
                                        [f"tp_rs_{hex_id}", f"tp_ro_{hex_id}"])
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", SCHEMAS_DATABASE):
            conn = await asyncpg.connect(stack.pg.dsn(SCHEMAS_DATABASE))
            try:
                assert not await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                                               f"tp_so_{hex_id}")
            finally:
                await conn.close()
    finally:
        await admin.close()


async def test_backups_are_listed_newest_first_and_one_another_tenant_cannot_restore(api, tenant_app):
    first, second = await create_tenant(api, "dedicated"), await create_tenant(api, "dedicated")
    older = await take_backup(api, first["id"])
    newer = await take_backup(api, first["id"])
    listed = (await api.get(f"/v1/tenants/{first['slug']}/backups")).json()["items"]
    assert [b["id"] for b in listed][:2] == [newer["id"], older["id"]]
    response = await api.post(f"/v1/tenants/{second['id']}/restore", json={"backup_id": older["id"]})
    assert response.status_code == 422 and response.json()["code"] == "backup_of_other_tenant"
    assert (await api.get(f"/v1/tenants/{second['id']}/backups")).json()["items"] == []


async def test_key_rotation_keeps_old_backups_readable(api, tenant_app):
    tenant = await create_tenant(api, "dedicated")
    await add_project(tenant_app, tenant["slug"], "under-key-1")
    old = await take_backup(api, tenant["id"])
    rotated = await api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["current_version"] == old["key_version"] + 1
    new = await take_backup(api, tenant["id"])
    assert new["key_version"] == old["key_version"] + 1
    await add_project(tenant_app, tenant["slug"], "later")
    assert (await restore(api, tenant["id"], old["id"]))["state"] == "succeeded"
    assert await projects(tenant_app, tenant["slug"]) == ["under-key-1"]


async def test_a_destroyed_key_fails_the_restore_clearly_and_leaves_the_tenant_as_it_was(api, tenant_app, stack):
    tenant = await create_tenant(api, "dedicated")
    await add_project(tenant_app, tenant["slug"], "before")
    backup = await take_backup(api, tenant["id"])
    await add_project(tenant_app, tenant["slug"], "after")
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:  # what deletion will do (crypto-shredding), behind the API's back
        await catalog.execute("UPDATE tenant_keys SET wrapped_key = NULL, destroyed_at = now() "
                              "WHERE tenant_id = $1::uuid", tenant["id"])
    finally:
        await catalog.close()
    op = await restore(api, tenant["id"], backup["id"])
    assert op["state"] == "failed" and "destroyed" in op["error"], op
    assert (await wait_for(api, tenant["id"], "active"))["status"] == "active"
    assert await projects(tenant_app, tenant["slug"]) == ["after", "before"]
    await no_leftovers(stack, tenant["id"])
    rotated = await api.post(f"/v1/tenants/{tenant['id']}/keys/rotate")
    assert rotated.status_code == 409 and rotated.json()["code"] == "backup_keys_destroyed"


async def verify(api: httpx.AsyncClient, backup_id: str) -> dict:
    response = await api.post(f"/v1/backups/{backup_id}/verify")
    assert response.status_code == 202, response.text
    return await finished(api, response.json()["operation_id"])


async def no_scratch(stack: Stack, backup_id: str, within: float = 15.0) -> None:
    """The drill's scratch database is gone. A failed drill is recorded first and undone right
    after (runner._give_up), so the operation's answer can come before the drop: allow it that."""
    admin = await asyncpg.connect(stack.pg.dsn())
    deadline = time.monotonic() + within
    try:
        while await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                   "tp_vd_" + backup_id.replace("-", "")):
            assert time.monotonic() < deadline, f"the scratch database of backup {backup_id} is still there"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_a_drill_restores_into_a_scratch_database_and_records_the_result(api, tenant_app, stack, tier):
    tenant = await create_tenant(api, tier)
    await add_project(tenant_app, tenant["slug"], "drilled")
    backup = await take_backup(api, tenant["id"])
    assert backup["verified_at"] is None
    op = await verify(api, backup["id"])
    assert op["state"] == "succeeded", op
    after = (await api.get(f"/v1/backups/{backup['id']}")).json()
    assert after["verified_at"] is not None
    assert after["drill_result"]["ok"] is True and after["drill_result"]["restore_seconds"] >= 0
    await no_scratch(stack, backup["id"])
    assert await projects(tenant_app, tenant["slug"]) == ["drilled"]  # the tenant was not touched


async def test_a_drill_of_a_tampered_object_fails_and_says_so(api, tenant_app, stack):
    from pathlib import Path
    from urllib.parse import urlsplit

    tenant = await create_tenant(api, "dedicated")
    backup = await take_backup(api, tenant["id"])
    path = Path(urlsplit(stack.settings.backup_store_url).path) / "tenants" / tenant["id"] / "backups" / \
        f"{backup['id']}.tpbk"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    op = await verify(api, backup["id"])
    assert op["state"] == "failed" and "digest" in op["error"], op
    after = (await api.get(f"/v1/backups/{backup['id']}")).json()
    assert after["verified_at"] is None and after["drill_result"]["ok"] is False
    await no_scratch(stack, backup["id"])
    op = await restore(api, tenant["id"], backup["id"])  # a restore of it fails too, and changes nothing
    assert op["state"] == "failed", op
    assert (await wait_for(api, tenant["id"], "active"))["status"] == "active"


@pytest.mark.parametrize("tier", ["dedicated", "shared"])
async def test_a_backup_taken_under_a_writer_holds_its_invariant(api, tenant_app, stack, tier):
    """A writer renames two projects in one transaction each time, so both names always carry the
    same counter; the dump's one snapshot must never split a transaction. The writer runs in a
    thread of its own (the in-process API client blocks this loop while it waits)."""
    import asyncio
    import threading

    tenant = await create_tenant(api, tier)
    await add_project(tenant_app, tenant["slug"], "left-0")
    await add_project(tenant_app, tenant["slug"], "right-0")
    database = identifiers.tenant_database(tenant["id"]) if tier == "dedicated" else SHARED_DATABASE
    where = "" if tier == "dedicated" else f" AND tenant_id = '{tenant['id']}'"
    dsn, stop, written = stack.pg.dsn(database), threading.Event(), []

    async def write() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            n = 0
            while not stop.is_set():
                n += 1
                async with conn.transaction():
                    await conn.execute(f"UPDATE projects SET name = 'left-{n}' WHERE name LIKE 'left-%'{where}")
                    await asyncio.sleep(0.001)
                    await conn.execute(f"UPDATE projects SET name = 'right-{n}' WHERE name LIKE 'right-%'{where}")
                written.append(n)
        finally:
            await conn.close()

    writer = threading.Thread(target=lambda: asyncio.run(write()))
    writer.start()
    try:
        backup = await take_backup(api, tenant["id"])
    finally:
        stop.set()
        writer.join(10)
    assert len(written) > 1
    op = await restore(api, tenant["id"], backup["id"])
    assert op["state"] == "succeeded", op
    left, right = await projects(tenant_app, tenant["slug"])
    assert left.split("-")[1] == right.split("-")[1], (left, right)


async def test_an_export_restores_with_the_stock_pg_restore_into_a_plain_database(api, tenant_app, stack, tmp_path):
    import subprocess
    import sys

    from provisioning.backups.dump import find_binaries
    from tests.conftest import ROOT

    tenant = await create_tenant(api, "dedicated")
    await add_project(tenant_app, tenant["slug"], "exported")
    backup = await take_backup(api, tenant["id"])
    out = tmp_path / "tenant.dump"
    done = subprocess.run([sys.executable, "-m", "control_plane.cli", "backup", "export", backup["id"], "--out", str(out)],
                          env=stack.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(b"PGDMP")
    plain = "plain_" + tenant["id"].replace("-", "")[:12]
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{plain}"')
        restored = subprocess.run([str(find_binaries() / "pg_restore"), "--no-owner", "--no-privileges",
                                   f"--dbname={stack.pg.dsn(plain)}", str(out)], capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr
        conn = await asyncpg.connect(stack.pg.dsn(plain))
        try:
            assert [r["name"] for r in await conn.fetch("SELECT name FROM projects")] == ["exported"]
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{plain}" WITH (FORCE)')
        await admin.close()


async def test_destroying_a_tenants_keys_through_the_api_shreds_its_backups(api, tenant_app, stack):
    tenant = await create_tenant(api, "schema")
    await add_project(tenant_app, tenant["slug"], "kept")
    backup = await take_backup(api, tenant["id"])
    unconfirmed = await api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={})
    assert unconfirmed.status_code == 422 and unconfirmed.json()["code"] == "validation_failed"
    refused = await api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": False})
    assert refused.status_code == 422, refused.text
    assert (await verify(api, backup["id"]))["state"] == "succeeded"  # still readable until now

    done = await api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})
    assert done.status_code == 200, done.text
    assert done.json()["destroyed_versions"] >= 1
    assert all(v["destroyed_at"] is not None for v in done.json()["versions"])
    again = await api.post(f"/v1/tenants/{tenant['id']}/keys/destroy", json={"confirm": True})
    assert again.status_code == 200 and again.json()["destroyed_versions"] == 0

    drill = await verify(api, backup["id"])
    assert drill["state"] == "failed" and "destroyed" in drill["error"], drill
    new = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    assert (await finished(api, new.json()["operation_id"]))["state"] == "failed"
    assert await projects(tenant_app, tenant["slug"]) == ["kept"]  # the tenant itself is untouched
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        assert await catalog.fetchval("SELECT count(*) FROM audit_log WHERE action = 'tenant.keys.destroy' "
                                      "AND target_id = $1", tenant["id"]) == 2
    finally:
        await catalog.close()
