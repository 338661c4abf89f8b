"""pg_restore loads a backup as the operation's short-lived, unprivileged role `tp_restore_<operation>`,
not as the server's admin: what the archive made belongs to that role until the hardening hands it
to the admin, an archive carrying privileged SQL fails cleanly and leaves the tenant as it was, and
no restore role outlives its operation (success, failure, SIGKILL and rerun)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.identifiers import SCHEMAS_DATABASE, quote_literal
from provisioning.tiers.snapshots import staging_database
from tests.conftest import Stack, admin_client, extra_postgres, make_stack, stop_process, unique_slug, wait_for
from tests.provisioning.test_backup_restore import no_leftovers
from tests.provisioning.test_crash_recovery import sigkill, wait_paused

# a failing step is retried once, quickly: the hostile archives fail every attempt
FAST_FAIL = {"STEP_MAX_ATTEMPTS": "2", "STEP_RETRY_BASE_SECONDS": "0.1"}


@pytest.fixture(scope="module")
def roles_pg(tmp_root):
    with extra_postgres(tmp_root, "pg-restore-roles") as server:
        yield server


@pytest.fixture(scope="module")
async def rr_stack(roles_pg, redis_server) -> Stack:
    return await make_stack(roles_pg, redis_server.url, "catalog_restore_roles")


@pytest.fixture(scope="module")
async def rr_api(rr_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(rr_stack) as client:
        yield client


@contextmanager
def worker(stack: Stack) -> Iterator[None]:
    proc = stack.start_worker(**FAST_FAIL)
    try:
        yield
    finally:
        stop_process(proc)


async def ended(api: httpx.AsyncClient, op_id: str) -> dict:
    for _ in range(30):
        op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 5})).json()
        if op["state"] in ("succeeded", "failed"):
            return op
    raise AssertionError(f"operation {op_id} did not end: {op}")


async def admin_sql(stack: Stack, sql: str, *args: object, database: str | None = None) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.pg.dsn(database) if database else stack.pg.dsn())
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def tenant_database(tenant: dict) -> str:
    return identifiers.tenant_database(tenant["id"]) if tenant["tier"] == "dedicated" else SCHEMAS_DATABASE


def tenant_schema(tenant: dict) -> str:
    return "public" if tenant["tier"] == "dedicated" else identifiers.tenant_schema(tenant["id"])


async def names(stack: Stack, tenant: dict) -> list[str]:
    rows = await admin_sql(stack, f'SELECT name FROM "{tenant_schema(tenant)}".projects ORDER BY name',
                           database=tenant_database(tenant))
    return [r["name"] for r in rows]


async def backed_up_tenant(stack: Stack, api: httpx.AsyncClient, tier: str = "dedicated",
                           *setup: str) -> tuple[dict, str]:
    """An active tenant holding projects a and b, with `setup` run as the admin in its database,
    and a succeeded backup of it (a worker must be running)."""
    r = await api.post("/v1/tenants", json={"slug": unique_slug("rr"), "name": "Roles", "tier": tier})
    assert r.status_code == 202, r.text
    tenant = await wait_for(api, r.json()["tenant"]["id"], "active")
    schema = tenant_schema(tenant)
    conn = await asyncpg.connect(stack.pg.dsn(tenant_database(tenant)))
    try:
        await conn.execute(f'INSERT INTO "{schema}".projects (name) VALUES (\'a\'), (\'b\')')
        for sql in setup:
            await conn.execute(sql.format(schema=schema, database=tenant_database(tenant)))
    finally:
        await conn.close()
    r = await api.post(f"/v1/tenants/{tenant['id']}/backups")
    assert r.status_code == 202, r.text
    op = await ended(api, r.json()["operation_id"])
    assert op["state"] == "succeeded", op
    return tenant, r.json()["backup"]["id"]


async def undone(stack: Stack, tenant_id: str) -> None:
    """A failed operation's undo runs after the failure is recorded: wait for it (a worker runs)."""
    for _ in range(100):
        if not await admin_sql(stack, "SELECT 1 FROM pg_database WHERE datname = $1", staging_database(tenant_id)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the staging database of {tenant_id} outlived its operation")


async def restore(api: httpx.AsyncClient, tenant: dict, backup_id: str) -> str:
    r = await api.post(f"/v1/tenants/{tenant['id']}/restore", json={"backup_id": backup_id})
    assert r.status_code == 202, r.text
    return r.json()["operation_id"]


async def restore_roles_left(stack: Stack) -> list[str]:
    rows = await admin_sql(stack, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
                           identifiers.RESTORE_ROLE_PREFIX)
    return [r["rolname"] for r in rows]


@pytest.mark.parametrize("tier", ["dedicated", pytest.param("schema", marks=pytest.mark.chaos)])
async def test_pg_restore_runs_as_the_operations_role_and_a_rerun_after_sigkill_drops_it(
        tier: str, rr_stack: Stack, rr_api: httpx.AsyncClient):
    with worker(rr_stack):
        tenant, backup_id = await backed_up_tenant(rr_stack, rr_api, tier)
    op_id = await restore(rr_api, tenant, backup_id)
    role = identifiers.restore_role(op_id)

    # killed after the load, before the hardening: what pg_restore made is the restore role's
    paused = rr_stack.start_worker(capture=True, TENANTPLANE_TEST_PAUSE_BEFORE_STEP="harden_restored")
    try:
        await wait_paused(paused, "harden_restored")
    finally:
        sigkill(paused)
    (attrs,) = await admin_sql(rr_stack, "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
                                         "rolreplication, rolinherit, rolvaliduntil FROM pg_roles WHERE rolname = $1",
                               role)
    assert attrs["rolcanlogin"] and attrs["rolvaliduntil"] is not None
    assert not any(attrs[a] for a in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls",
                                      "rolreplication", "rolinherit")), dict(attrs)
    assert not await admin_sql(rr_stack, "SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                                         "WHERE r.rolname = $1", role)  # a member of no role
    if tier == "dedicated":
        owners = await admin_sql(rr_stack, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
                                 database=staging_database(tenant["id"]))
    else:
        owners = await admin_sql(rr_stack, "SELECT tableowner FROM pg_tables WHERE schemaname = $1 UNION "
                                           "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1",
                                 identifiers.tenant_schema(tenant["id"]), database=SCHEMAS_DATABASE)
    assert [o[0] for o in owners] == [role]

    with worker(rr_stack):
        op = await ended(rr_api, op_id)

    assert op["state"] == "succeeded", op
    assert await names(rr_stack, tenant) == ["a", "b"]
    assert await restore_roles_left(rr_stack) == []
    (admin_user,) = await admin_sql(rr_stack, "SELECT current_user")
    owners = await admin_sql(rr_stack, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = $1",
                             tenant_schema(tenant), database=tenant_database(tenant))
    assert [o[0] for o in owners] == [admin_user[0]]  # the tier's owner again, as a fresh tenant's
    await no_leftovers(rr_stack, tenant["id"])


def _probe(statement: str) -> tuple[str, str]:
    """A function that runs `statement` in any database but the tenant's own, and a CHECK that
    calls it for every row: harmless where it was made, run by pg_restore as the backup's rows
    load (an archive is code; this one could as well have been edited to hold the statement)."""
    function = ("CREATE FUNCTION {schema}.tp_probe(v text) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN "
                "IF current_database() <> '{database}' THEN EXECUTE "
                + quote_literal(statement).replace("{", "{{").replace("}", "}}") + "; END IF; RETURN true; END $f$")
    return function, "ALTER TABLE {schema}.projects ADD CONSTRAINT projects_probe CHECK ({schema}.tp_probe(name))"


async def _victim(stack: Stack) -> str:
    victim = "tp_victim_" + unique_slug("")
    await admin_sql(stack, f'CREATE ROLE "{victim}" NOLOGIN NOSUPERUSER')
    return victim


# ALTER ROLE: test_a_restore_a_drill_and_a_clone_of_a_hostile_archive_fail_and_leave_no_role
@pytest.mark.parametrize("attack", ["copy_to_program", pytest.param("create_extension", marks=pytest.mark.chaos)])
async def test_an_archive_carrying_privileged_sql_fails_cleanly_and_leaves_the_tenant_as_it_was(
        attack: str, rr_stack: Stack, rr_api: httpx.AsyncClient, tmp_path: Path):
    victim, marker = await _victim(rr_stack), tmp_path / "pwned"
    statement = {"copy_to_program": f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
                 "create_extension": "CREATE EXTENSION vector SCHEMA public"}[attack]
    with worker(rr_stack):
        tenant, backup_id = await backed_up_tenant(rr_stack, rr_api, "dedicated", *_probe(statement))
        await admin_sql(rr_stack, "INSERT INTO projects (name) VALUES ('written-after')",
                        database=tenant_database(tenant))
        op = await ended(rr_api, await restore(rr_api, tenant, backup_id))
        await undone(rr_stack, tenant["id"])

    assert op["state"] == "failed", op
    failed = next(s for s in op["steps"] if s["state"] == "failed")
    assert failed["name"] == "fetch_and_load" and "pg_restore" in failed["error"], failed
    assert any(w in failed["error"] for w in ("permission denied", "must be superuser")), failed["error"]
    assert (await rr_api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "active"
    assert await names(rr_stack, tenant) == ["a", "b", "written-after"]  # the tenant as it was
    (flags,) = await admin_sql(rr_stack, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", victim)
    assert flags["rolsuper"] is False and not marker.exists()
    assert not await admin_sql(rr_stack, "SELECT 1 FROM pg_extension WHERE extname = 'vector'",
                               database=tenant_database(tenant))
    assert await restore_roles_left(rr_stack) == []
    await no_leftovers(rr_stack, tenant["id"])


async def test_a_restore_a_drill_and_a_clone_of_a_hostile_archive_fail_and_leave_no_role(
        rr_stack: Stack, rr_api: httpx.AsyncClient):
    """The archive's ALTER ROLE would make a role superuser if the admin loaded it."""
    victim = await _victim(rr_stack)
    with worker(rr_stack):
        tenant, backup_id = await backed_up_tenant(rr_stack, rr_api, "dedicated",
                                                   *_probe(f'ALTER ROLE "{victim}" SUPERUSER'))
        restored = await ended(rr_api, await restore(rr_api, tenant, backup_id))
        await undone(rr_stack, tenant["id"])
        drill = await rr_api.post(f"/v1/backups/{backup_id}/verify")
        assert drill.status_code == 202, drill.text
        drilled = await ended(rr_api, drill.json()["operation_id"])
        clone = await rr_api.post("/v1/tenants", json={"slug": unique_slug("rrc"), "name": "Clone",
                                                       "tier": "dedicated", "from_backup": backup_id})
        assert clone.status_code == 202, clone.text
        cloned = await ended(rr_api, clone.json()["operation_id"])
        await undone(rr_stack, clone.json()["tenant"]["id"])

    for op in (restored, drilled, cloned):
        assert op["state"] == "failed", op
        error = next(s for s in op["steps"] if s["state"] == "failed")["error"]
        assert "pg_restore" in error and "permission denied" in error, error
    assert (await rr_api.get(f"/v1/tenants/{tenant['id']}")).json()["status"] == "active"
    assert (await rr_api.get(f"/v1/backups/{backup_id}")).json()["drill_result"]["ok"] is False
    (flags,) = await admin_sql(rr_stack, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", victim)
    assert flags["rolsuper"] is False
    assert await restore_roles_left(rr_stack) == []
    assert not await admin_sql(rr_stack, "SELECT datname FROM pg_database WHERE datname = $1",
                               "tp_vd_" + backup_id.replace("-", ""))
    assert await names(rr_stack, tenant) == ["a", "b"]
    await no_leftovers(rr_stack, tenant["id"])


async def test_an_archives_grants_to_public_do_not_survive_the_hardening(rr_stack: Stack, rr_api: httpx.AsyncClient):
    """What the restore role may do (it owns what it loads) is harmless: the grant is taken back."""
    with worker(rr_stack):
        tenant, backup_id = await backed_up_tenant(rr_stack, rr_api, "dedicated",
                                                   *_probe("GRANT ALL ON TABLE public.projects TO PUBLIC"))
        op = await ended(rr_api, await restore(rr_api, tenant, backup_id))

    assert op["state"] == "succeeded", op
    (grants,) = await admin_sql(rr_stack, "SELECT has_table_privilege('public', 'public.projects', 'SELECT') AS s, "
                                          "has_table_privilege('public', 'public.projects', 'TRUNCATE') AS t",
                                database=tenant_database(tenant))
    assert not grants["s"] and not grants["t"]
    assert await names(rr_stack, tenant) == ["a", "b"]
    assert await restore_roles_left(rr_stack) == []
