"""Spare databases: made hardened and marked, dropped when stale, unmarked or surplus, never claimed
twice, kept only on active servers with room, claimed by creates, and listed apart by the
reconciler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.credentials import role_password
from migrations import runner
from provisioning import spares
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo, load_server
from provisioning.steps.roles import ensure_role, login_clause
from provisioning.template import mark_sql, marked_revision, upgrade_template
from tests.conftest import (
    SECRET_KEY,
    Stack,
    admin_client,
    extra_postgres,
    make_stack,
    stop_process,
    unique_slug,
    wait_for,
)

BOX = SecretBox(SECRET_KEY)


@pytest.fixture(scope="module")
async def spares_stack(tmp_root, redis_server) -> AsyncIterator[Stack]:
    # a server of its own (the session worker keeps spares on the shared one) and a catalog of its own
    with extra_postgres(tmp_root, "pg-spares") as server:
        yield await make_stack(server, redis_server.url, "catalog_spares")


@pytest.fixture(scope="module")
async def spares_api(spares_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(spares_stack) as client:
        yield client


@pytest.fixture
async def server(spares_stack: Stack) -> ServerInfo:
    catalog = await asyncpg.connect(spares_stack.catalog_dsn)
    try:
        info = await load_server(catalog, await catalog.fetchval("SELECT id FROM database_servers"))
    finally:
        await catalog.close()
    await upgrade_template(info, BOX, runner.DEMO_TREE)
    return info


@pytest.fixture
async def admin(spares_stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(spares_stack.pg.dsn())
    yield conn
    await conn.close()


async def spare_rows(admin: asyncpg.Connection) -> dict[str, str | None]:
    return dict(await spares.list_spares(admin))


async def test_refill_makes_hardened_marked_spares_and_drops_stale_unmarked_and_surplus_ones(
        server: ServerInfo, admin: asyncpg.Connection):
    head = runner.head(runner.DEMO_TREE)
    made = await spares.refill(server, BOX, 2)
    assert len(made) == 2 and await spare_rows(admin) == {name: head for name in made}
    for name in made:
        assert not await admin.fetchval("SELECT has_database_privilege('public', $1, 'CONNECT')", name)
        assert not await admin.fetchval("SELECT has_database_privilege('public', $1, 'TEMPORARY')", name)

    # workers died between copy and mark, and before the copy; a fleet migration left one behind
    unmarked = identifiers.spare_database("00000000-0000-0000-0000-000000000001")
    lone_role = identifiers.spare_database("00000000-0000-0000-0000-000000000002")
    await admin.execute(f'CREATE DATABASE "{unmarked}" TEMPLATE tp_template')
    await admin.execute(f'CREATE ROLE "{lone_role}" NOLOGIN')
    await admin.execute(mark_sql(made[0], "t0001"))
    after = await spares.refill(server, BOX, 2)
    rows = await spare_rows(admin)
    assert unmarked not in rows and made[0] not in rows and made[1] in after
    assert await admin.fetchval("SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles "
                                "WHERE starts_with(rolname, $1)", identifiers.SPARE_PREFIX) == sorted(after)
    assert rows == {name: head for name in after} and len(after) == 2

    assert await spares.refill(server, BOX, 0) == []
    assert await spare_rows(admin) == {}


async def test_concurrent_claims_never_take_the_same_spare(server: ServerInfo, admin: asyncpg.Connection,
                                                           spares_stack: Stack):
    head = runner.head(runner.DEMO_TREE)
    made = await spares.refill(server, BOX, 2)
    assert await spares.claim(admin, "tp_db_never", "tp_role_never", "NOLOGIN", "t0001") is None  # none at that revision
    conns = [await asyncpg.connect(spares_stack.pg.dsn()) for _ in range(5)]
    targets = [f"tp_db_claim_{i}" for i in range(5)]
    roles = [f"tp_role_claim_{i}" for i in range(5)]
    try:
        for role in roles:  # as create_role leaves them
            await ensure_role(admin, role, SECRET_KEY)
        got = await asyncio.gather(*(spares.claim(c, t, r, login_clause(r, SECRET_KEY), head)
                                     for c, t, r in zip(conns, targets, roles)))
        assert sorted(g for g in got if g) == [head, head]
        claimed = [t for t, g in zip(targets, got) if g]
        rows = await admin.fetch("SELECT datname, shobj_description(oid, 'pg_database') AS c FROM pg_database "
                                 "WHERE datname = ANY($1::text[])", targets)
        assert sorted(r["datname"] for r in rows) == sorted(claimed)
        assert all(r["c"] is None for r in rows)  # a tenant database carries no mark
        assert not set(made) & set(await spare_rows(admin))
        assert not await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", made)
        assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[]) "
                                    "AND rolcanlogin", roles) == 5
    finally:
        for c in conns:
            await c.close()
        for t in targets:
            await admin.execute(f'DROP DATABASE IF EXISTS "{t}"')
        for role in roles:
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')


async def test_spares_only_on_active_servers_and_within_capacity(spares_stack: Stack):
    catalog = await asyncpg.connect(spares_stack.catalog_dsn)
    try:
        server_id = await catalog.fetchval("SELECT id FROM database_servers WHERE name = 'local'")
        placed = await catalog.fetchval("SELECT count(*) FROM placements WHERE server_id = $1", server_id)

        async def wanted() -> int:
            return dict((s.name, n) for s, n in await spares.wanted_per_server(catalog, 2))["local"]

        assert await wanted() == 2
        await catalog.execute("UPDATE database_servers SET capacity_databases = $2 WHERE id = $1",
                              server_id, placed + 1)
        assert await wanted() == 1  # spares count against the capacity
        await catalog.execute("UPDATE database_servers SET capacity_databases = $2 WHERE id = $1", server_id, placed)
        assert await wanted() == 0
        await catalog.execute("UPDATE database_servers SET capacity_databases = 10000, status = 'cordoned' "
                              "WHERE id = $1", server_id)
        assert await wanted() == 0  # cordoned (or draining): no new spares, and the refill drops its spares
    finally:
        await catalog.execute("UPDATE database_servers SET capacity_databases = 10000, status = 'active'")
        await catalog.close()


async def wait_spares(admin: asyncpg.Connection, n: int, timeout: float = 60) -> dict[str, str | None]:
    """Until the server holds `n` spares, every one marked."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await spare_rows(admin)
        if len(rows) == n and all(rows.values()):
            return rows
        assert time.monotonic() < deadline, f"not {n} marked spares: {rows}"
        await asyncio.sleep(0.1)


async def test_a_create_claims_a_spare_the_worker_refills_and_the_reconciler_lists_spares_apart(
        spares_stack: Stack, spares_api: httpx.AsyncClient, admin: asyncpg.Connection, server: ServerInfo):
    from provisioning.reconcile import reconcile

    worker = spares_stack.start_worker(SPARE_DATABASES="2")
    try:
        before = await wait_spares(admin, 2)
        oids = set(await admin.fetchval("SELECT array_agg(oid) FROM pg_database WHERE datname = ANY($1::text[])",
                                        list(before)))
        r = await spares_api.post("/v1/tenants", json={"slug": unique_slug("sp"), "name": "Spare"})
        tenant = await wait_for(spares_api, r.json()["tenant"]["id"], "active")
        database = identifiers.tenant_database(tenant["id"])
        assert await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", database) in oids
        assert tenant["tenant_revision"] == runner.head(runner.DEMO_TREE)
        assert await marked_revision(admin, database) is None
        assert not await admin.fetchval("SELECT has_database_privilege('public', $1, 'CONNECT')", database)
        # the spare's role became the tenant's: it logs in with its derived password, reads and
        # writes rows, changes no schema, and reaches no spare
        role = identifiers.tenant_role(tenant["id"])
        login = {"host": "127.0.0.1", "port": spares_stack.pg.port, "user": role,
                 "password": role_password(SECRET_KEY, role)}
        own = await asyncpg.connect(**login, database=database)
        try:
            await own.execute("INSERT INTO projects (name) VALUES ('first')")
            assert await own.fetchval("SELECT count(*) FROM projects") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await own.execute("CREATE TABLE sneaky (id int)")
        finally:
            await own.close()
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(**login, database=next(iter(await spare_rows(admin))))
        after = await wait_spares(admin, 2)  # the claim woke the refill
        assert len(set(after) - set(before)) == 1

        catalog = await asyncpg.connect(spares_stack.catalog_dsn)
        try:
            report = await reconcile(catalog, BOX)
        finally:
            await catalog.close()
        assert report.findings == []
        assert sorted(s.database for s in report.spares) == sorted(after)
        assert {s.revision for s in report.spares} == {runner.head(runner.DEMO_TREE)}

    finally:
        stop_process(worker)

    # cordoned (a drain cordons too): a pass of the refill drops the spares and makes none
    catalog = await asyncpg.connect(spares_stack.catalog_dsn)
    try:
        assert (await spares_api.post("/v1/database-servers/local/cordon")).status_code in (200, 201)
        await spares.refill_all(catalog, BOX, 2)
        assert await spare_rows(admin) == {}
        assert (await spares_api.post("/v1/database-servers/local/uncordon")).status_code in (200, 201)
        await spares.refill_all(catalog, BOX, 2)
        assert len(await wait_spares(admin, 2)) == 2
    finally:
        await catalog.close()
