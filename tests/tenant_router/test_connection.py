"""A routed transaction on a real server: three round trips (BEGIN with the binding, the handler's
statements, COMMIT with the reset), savepoints inside it, and a connection that comes back clean
when the COMMIT fails or the binding is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from contracts.placement import Placement
from tenant_router.binding import tenant_transaction
from tenant_router.connection import DEALLOCATE_SQL, RESET_SQL, TenantConnection
from tenant_router.directory import Directory
from tenant_router.pools import PoolRegistry
from tenant_router.resolution import TenantKey
from tests.conftest import Stack, create_active_tenant, unique_slug, wait_for


@pytest.fixture(scope="module")
async def placements(api, stack: Stack) -> dict[str, Placement]:
    """One active tenant per tier, as the router sees it."""
    ids = {"dedicated": (await create_active_tenant(api))["id"]}
    for tier in ("schema", "shared"):
        r = await api.post("/v1/tenants", json={"slug": unique_slug(tier[:2]), "name": tier, "tier": tier})
        assert r.status_code == 202, r.text
        ids[tier] = (await wait_for(api, r.json()["tenant"]["id"], "active"))["id"]
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        directory = Directory(catalog, ttl=30, negative_ttl=1)
        return {tier: await directory.get_placement(TenantKey("id", tid)) for tier, tid in ids.items()}
    finally:
        await catalog.close()


@pytest.fixture
async def registry(stack: Stack) -> AsyncIterator[PoolRegistry]:
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1, shared_pool_max_connections=1)
    try:
        yield registry
    finally:
        await registry.close()


def underlying(handed: asyncpg.Connection) -> TenantConnection:
    """The pooled connection behind the proxy a borrower holds (while it is attached)."""
    con = handed._con  # type: ignore[attr-defined]
    assert isinstance(con, TenantConnection) and type(handed) is not TenantConnection
    return con


def lent(registry: PoolRegistry) -> int:
    return sum(pool.lent for pool in registry._pools.values())


def record_statements(monkeypatch) -> list[str]:
    """From now on, every statement a TenantConnection sends (simple-query messages included)."""
    sent: list[str] = []
    execute = TenantConnection.execute

    async def recording(self, query: str, *args, **kwargs):
        sent.append(query)
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(TenantConnection, "execute", recording)
    return sent


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_a_routed_transaction_is_three_round_trips(placements, registry, monkeypatch, tier: str):
    async with tenant_transaction(registry, placements[tier]):  # the first one opens the connection
        pass
    sent = record_statements(monkeypatch)
    async with tenant_transaction(registry, placements[tier]) as conn:
        await conn.execute("SELECT 1")
    assert len(sent) == 3, sent  # nothing more at release: the reset went with the COMMIT
    assert sent[0].startswith("BEGIN") and sent[1] == "SELECT 1" and sent[2].startswith("COMMIT;" + RESET_SQL)
    if tier == "dedicated":
        assert sent[0] == "BEGIN"  # the login role is the binding
    else:
        assert str(placements[tier].tenant_id) in sent[0] or placements[tier].schema in sent[0]


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_the_binding_holds_inside_and_is_gone_after(placements, registry, tier: str):
    placement = placements[tier]
    async with tenant_transaction(registry, placement) as conn:
        bound = await conn.fetchrow("SELECT current_user AS who, current_setting('app.tenant_id', true) AS tenant, "
                                    "current_setting('search_path') AS path")
        await conn.execute("SET application_name = 'session-level'")  # not LOCAL: the reset's job
    async with registry.connection(placement.pool_key, 100) as conn:  # the same connection, unbound
        after = await conn.fetchrow("SELECT current_user AS who, current_setting('app.tenant_id', true) AS tenant, "
                                    "current_setting('search_path') AS path, "
                                    "current_setting('application_name') AS app")
    if tier == "shared":
        assert bound["tenant"] == str(placement.tenant_id) and after["tenant"] in (None, "")
    if tier == "schema":
        assert bound["who"] == placement.role and bound["path"].strip('"') == placement.schema
        assert after["who"] == placement.login_role and placement.schema not in after["path"]
    assert after["app"] == ""


async def test_a_block_inside_the_transaction_is_a_savepoint(placements, registry):
    placement = placements["dedicated"]
    async with tenant_transaction(registry, placement) as conn:
        await conn.execute("INSERT INTO projects (name) VALUES ('kept')")
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with conn.transaction():
                await conn.execute("INSERT INTO projects (name) VALUES ('rolled back')")
                await conn.execute("SELECT 1 / 0")
        async with conn.transaction():
            await conn.execute("INSERT INTO projects (name) VALUES ('released')")
        with pytest.raises(asyncpg.InterfaceError, match="savepoint"):
            conn.transaction(isolation="serializable")
    async with tenant_transaction(registry, placement) as conn:
        names = {r["name"] for r in await conn.fetch("SELECT name FROM projects")}
        await conn.execute("DELETE FROM projects WHERE name IN ('kept', 'released')")
    assert {"kept", "released"} <= names and "rolled back" not in names


async def test_a_failed_commit_still_gives_the_connection_back_clean(placements, registry):
    placement = placements["dedicated"]
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # raised by the COMMIT: a deferred check
        async with tenant_transaction(registry, placement) as conn:
            await conn.execute("CREATE TEMP TABLE deferred_check (id int PRIMARY KEY, "
                               "parent int REFERENCES deferred_check (id) DEFERRABLE INITIALLY DEFERRED)")
            await conn.execute("SET application_name = 'left behind'")
            await conn.execute("INSERT INTO deferred_check VALUES (1, 2)")
    assert lent(registry) == 0
    async with tenant_transaction(registry, placement) as conn:  # the same connection (a pool of one)
        assert await conn.fetchval("SELECT to_regclass('pg_temp.deferred_check')") is None
        assert await conn.fetchval("SHOW application_name") == ""


async def test_a_refused_binding_gives_the_connection_back(placements, registry, caplog):
    placement = placements["schema"]
    stranger = msgspec.structs.replace(placement, role="tp_role_" + "0" * 32)  # no such role
    with pytest.raises(asyncpg.PostgresError):
        async with tenant_transaction(registry, stranger):
            pass
    assert lent(registry) == 0
    assert "active transaction" not in caplog.text  # rolled back before the release, not by asyncpg
    async with tenant_transaction(registry, placement) as conn:  # the pool of one is usable again
        assert await conn.fetchval("SELECT current_user") == placement.role


async def test_callbacks_a_borrower_added_are_dropped_at_release(placements, registry):
    placement = placements["dedicated"]
    heard: list[str] = []
    async with tenant_transaction(registry, placement) as conn:
        await conn.add_listener("tp_test_channel", lambda *args: heard.append("first borrower"))
        conn.add_log_listener(lambda *args: heard.append("first borrower's log"))
        first = underlying(conn)
    assert not first._listeners and not first._log_listeners  # the full reset ran, not the fast path
    async with tenant_transaction(registry, placement) as conn:
        assert underlying(conn) is first and first.clean is False
        await conn.execute("NOTIFY tp_test_channel; DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
    assert heard == []


@pytest.mark.parametrize("tier", ["dedicated", "shared"])
async def test_prepared_statements_a_borrower_left_are_deallocated(placements, registry, monkeypatch, tier: str):
    sent = record_statements(monkeypatch)
    async with tenant_transaction(registry, placements[tier]) as conn:
        await conn.execute("PREPARE left_behind AS SELECT 42")
        first = underlying(conn)
    assert sent[-1] == DEALLOCATE_SQL  # only because something was prepared
    async with tenant_transaction(registry, placements[tier]) as conn:
        assert underlying(conn) is first
        assert await conn.fetchval(f"SELECT count(*) FROM {first._prepared_view} s WHERE s.from_sql") == 0
        assert await conn.fetchval("SELECT 42") == 42  # asyncpg's statements are prepared again
    assert sent[-1].startswith("COMMIT;" + RESET_SQL)


@pytest.mark.parametrize("statement", ["DISCARD ALL", "DEALLOCATE ALL"])
@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_a_borrower_that_takes_asyncpgs_statements_away_does_not_break_the_next(
        placements, registry, tier: str, statement: str):
    """COMMIT, then DISCARD ALL (or DEALLOCATE ALL) outside the routed transaction: the statements
    asyncpg cached are gone on the server. The next borrower (on a shared pool, another tenant)
    must not fail on them: the reset notices and asyncpg prepares again."""
    async with tenant_transaction(registry, placements[tier]) as conn:
        assert await conn.fetchval("SELECT 42") == 42  # cached by asyncpg
        first = underlying(conn)
    async with tenant_transaction(registry, placements[tier]) as conn:
        for sql in ("COMMIT", statement, "BEGIN"):  # one by one: DISCARD ALL refuses a multi-statement block
            await conn.execute(sql)
    async with tenant_transaction(registry, placements[tier]) as conn:
        assert underlying(conn) is first
        assert await conn.fetchval("SELECT 42") == 42
