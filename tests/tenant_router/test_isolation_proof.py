"""Proof of isolation, through the real router and real servers.

1. A Hypothesis state machine drives the demo app with interleaved writes, reads (by Host and by
   tenant token), foreign tokens and suspend/resume for several tenants, and checks after every
   step that each answer holds exactly its own tenant's markers, no other tenant's.
2. Session state left on a pooled connection (SET, SET ROLE, set_config, temp table, PREPARE,
   LISTEN, advisory locks, held cursors, sequences, a task cancelled mid-transaction) is invisible
   to the next borrower of the same backend; handlers always get a connection in a transaction.
3. 1,000 concurrent requests over ten tenants, with awaits in between, never cross-talk and stay
   within the pool budgets.
4. Without a tenant scope there is no connection at all (NoTenantScope).

The routed proofs (1 and 3) run over all three tiers (MACHINE_MIX, CROWD_MIX): schema and shared
tenants share their pool with other tenants, so that is where a leak would show. The pool-hygiene
proofs (2) use dedicated tenants (TIER_MIX): they check the session against the tenant's own login
role, which only that tier has.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.testing import TestClient

from contracts import identifiers
from contracts.placement import Placement
from contracts.tiers import layout_of
from demo_app.app import create_app as create_demo_app
from tenant_router.binding import tenant_transaction
from tenant_router.config import RouterConfig
from tenant_router.connection import PREPARED_VIEW
from tenant_router.context import current_tenant, current_tenant_or_none, tenant_scope
from tenant_router.directory import Directory
from tenant_router.errors import NoTenantScope
from tenant_router.pools import PoolRegistry
from tenant_router.resolution import TenantKey
from tests.conftest import Stack, unique_slug, wait_for

# (tier, how many tenants)
TIER_MIX: tuple[tuple[str, int], ...] = (("dedicated", 6),)  # the pool-hygiene proofs (own-role pools)
MACHINE_MIX: tuple[tuple[str, int], ...] = (("dedicated", 2), ("schema", 2), ("shared", 2))
CROWD_MIX: tuple[tuple[str, int], ...] = (("dedicated", 4), ("schema", 3), ("shared", 3))
TIERS = sorted({tier for tier, _ in TIER_MIX})

# A suspension or resumption must be seen by the router within this long after the PATCH returns.
VISIBLE_WITHIN = 1.0


@dataclass(frozen=True)
class TenantUnderTest:
    id: str
    slug: str
    tier: str

    @property
    def role(self) -> str:
        return identifiers.tenant_role(self.id)


async def create_tenants(api: httpx.AsyncClient, mix: tuple[tuple[str, int], ...]) -> list[TenantUnderTest]:
    async def one(tier: str) -> TenantUnderTest:
        r = await api.post("/v1/tenants", json={"slug": unique_slug("iso"), "name": "Isolation", "tier": tier})
        assert r.status_code == 202, r.text
        body = await wait_for(api, r.json()["tenant"]["id"], "active")
        return TenantUnderTest(id=body["id"], slug=body["slug"], tier=body["tier"])

    return list(await asyncio.gather(*(one(tier) for tier, count in mix for _ in range(count))))


def router_config(stack: Stack, **overrides: Any) -> RouterConfig:
    return RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                        redis_url=stack.settings.redis_url, apex="localhost",
                        jwt_secret=stack.settings.tenant_jwt_secret, **overrides)


def token_for(stack: Stack, tenant: TenantUnderTest) -> str:
    claims = {"tenant_id": tenant.id, "exp": int(time.time()) + 900}
    return jwt.encode(claims, stack.settings.tenant_jwt_secret, algorithm="HS256")


def marker_owner(name: str) -> str | None:
    """Markers are `{kind}:{slug}:{n}`; the slug says whose it is."""
    parts = name.split(":")
    return parts[1] if len(parts) == 3 else None


def probe_handlers() -> list[Any]:
    """Extra routes on the demo app, to look at what a handler's `db` really is."""

    @get("/probe/scope")
    async def scope(db: NamedDependency[asyncpg.Connection]) -> dict[str, Any]:
        in_transaction = db.is_in_transaction()
        before = current_tenant()
        first = await db.fetchrow("SELECT current_user AS user_, current_database() AS db, "
                                  "pg_current_xact_id()::text AS xid")
        await asyncio.sleep(random.random() * 0.003)  # let other requests run in between
        second = await db.fetchrow(
            "SELECT current_user AS user_, session_user AS session_user_, current_database() AS db, "
            "pg_backend_pid() AS pid, pg_current_xact_id()::text AS xid, current_setting('role') AS role, "
            "current_setting('application_name') AS application_name, "
            "current_setting('statement_timeout') AS statement_timeout, "
            "current_setting('search_path') AS search_path, "
            "current_setting('default_transaction_isolation') AS default_isolation, "
            "coalesce(current_setting('app.tenant_id', true), '') AS app_tenant_id, "
            "to_regclass('pg_temp.leftover') IS NOT NULL AS temp_table, "
            f"(SELECT count(*) FROM {db._prepared_view} s WHERE s.from_sql) AS prepared, "
            "(SELECT count(*) FROM pg_listening_channels()) AS listening, "
            "(SELECT count(*) FROM pg_cursors WHERE name <> '') AS cursors, "
            + ("(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory"
               if db._prepared_view == PREPARED_VIEW else
               # pg_locks is closed to logins tenants share (steps/guard.py): their session locks
               # are checked from the admin's side (test_the_next_borrower_sees_no_session_state)
               "0 AS advisory"))
        after = current_tenant()
        return {"in_transaction": in_transaction, "tenant_before": before.slug, "tenant_after": after.slug,
                "first": dict(first), **dict(second)}

    @get("/probe/dirty")
    async def dirty(db: NamedDependency[asyncpg.Connection]) -> dict[str, Any]:
        """Leaves every kind of session state behind, then commits (the handler returns)."""
        role = await db.fetchval("SELECT current_user")
        await dirty_session(db, role)
        return {"pid": db.get_server_pid()}

    @get("/health/leaky")  # outside tenant resolution (the plugin skips ^/health): no tenant scope
    async def leaky(db: NamedDependency[asyncpg.Connection]) -> dict[str, Any]:
        return {"user": await db.fetchval("SELECT current_user")}

    return [scope, dirty, leaky]


def demo_app_with_probes(config: RouterConfig) -> Litestar:
    app = create_demo_app(config)
    for handler in probe_handlers():
        app.register(handler)
    return app


@contextlib.asynccontextmanager
async def routed_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this event loop (httpx's ASGITransport runs it in the caller's task, so a tenant
    scope that leaked out of a request would be visible to the caller), its lifespan included."""
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as client:
            yield client


# --- 1. the state machine ----------------------------------------------------------------------

N_TENANTS = sum(count for _, count in MACHINE_MIX)
TENANT = st.integers(min_value=0, max_value=N_TENANTS - 1)


@pytest.fixture(scope="module")
async def machine_tenants(api) -> list[TenantUnderTest]:
    return await create_tenants(api, MACHINE_MIX)


@dataclass
class World:
    """What outlives one Hypothesis example: the clients, and the markers each tenant holds."""

    app: TestClient
    control: TestClient
    tenants: list[TenantUnderTest]
    tokens: list[str]
    expected: list[set[str]]
    counter: itertools.count = field(default_factory=itertools.count)
    requests: int = 0
    examples: int = 0

    def call(self, method: str, url: str, tenant: int, via: str, host: int | None = None,
             **kwargs: Any) -> httpx.Response:
        """A request for `tenant`, named by its Host or by its token (`via`); `host` puts it on
        another tenant's host instead."""
        host_tenant = self.tenants[tenant if host is None else host]
        if via == "token":
            headers = {"Host": "localhost" if host is None else f"{host_tenant.slug}.localhost",
                       "Authorization": f"Bearer {self.tokens[tenant]}"}
        else:
            headers = {"Host": f"{host_tenant.slug}.localhost"}
        self.requests += 1
        return self.app.request(method, url, headers=headers, **kwargs)


@dataclass
class Pending:
    old: str
    new: str
    since: float  # when the PATCH answered
    seen: set[str] = field(default_factory=set)  # request paths ("host", "token") that saw `new`


def outcome(response: httpx.Response) -> str:
    if response.status_code in (200, 201):
        return "active"
    if response.status_code == 403 and response.json().get("code") == "tenant_suspended":
        return "suspended"
    raise AssertionError(f"unexpected answer {response.status_code}: {response.text}")


class TenantIsolationMachine(RuleBasedStateMachine):
    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        world.examples += 1
        self.status = ["active"] * len(world.tenants)  # every example starts with all tenants active
        self.pending: dict[int, Pending] = {}
        self.observed: list[tuple[int, list[str]]] = []  # answers the invariant has not checked yet

    # -- the model of a tenant's status, allowing the invalidation window after a change --------
    def check_status(self, tenant: int, via: str, response: httpx.Response) -> str:
        actual = outcome(response)
        pending = self.pending.get(tenant)
        if pending is None:
            assert actual == self.status[tenant], (
                f"tenant {tenant} answered as {actual} but is {self.status[tenant]} (via {via})")
            return actual
        if actual == pending.new:
            pending.seen.add(via)
            if pending.seen >= {"host", "token"}:
                del self.pending[tenant]
            return actual
        waited = time.monotonic() - pending.since
        assert via not in pending.seen, (
            f"tenant {tenant} flipped back to {actual} via {via} after showing {pending.new}")
        assert waited < VISIBLE_WITHIN, (
            f"tenant {tenant} still answers as {actual} {waited:.2f}s after becoming {pending.new} (via {via})")
        return actual

    def settle(self, tenant: int) -> None:
        """Wait until a pending change is visible on both request paths (bounded by VISIBLE_WITHIN)."""
        while tenant in self.pending:
            pending = self.pending[tenant]
            for via in sorted({"host", "token"} - pending.seen):
                self.observe_read(tenant, via)
            if tenant in self.pending:
                time.sleep(0.01)

    def observe_read(self, tenant: int, via: str) -> None:
        r = self.world.call("GET", "/api/projects", tenant, via)
        if self.check_status(tenant, via, r) == "active":
            assert r.status_code == 200, r.text
            self.observed.append((tenant, [p["name"] for p in r.json()]))

    def write(self, tenant: int, via: str) -> None:
        name = f"iso:{self.world.tenants[tenant].slug}:{next(self.world.counter)}"
        r = self.world.call("POST", "/api/projects", tenant, via, json={"name": name})
        if self.check_status(tenant, via, r) == "active":
            assert r.status_code == 201, r.text
            assert r.json()["name"] == name
            self.world.expected[tenant].add(name)

    # -- rules ----------------------------------------------------------------------------------
    @rule(tenant=TENANT)
    def write_by_host(self, tenant: int) -> None:
        self.write(tenant, "host")

    @rule(tenant=TENANT)
    def write_by_token(self, tenant: int) -> None:
        self.write(tenant, "token")

    @rule(tenant=TENANT)
    def read_by_host(self, tenant: int) -> None:
        self.observe_read(tenant, "host")

    @rule(tenant=TENANT)
    def read_by_token(self, tenant: int) -> None:
        self.observe_read(tenant, "token")

    @rule(tenant=TENANT, host=TENANT, write=st.booleans())
    def foreign_token_on_a_tenant_host(self, tenant: int, host: int, write: bool) -> None:
        if tenant == host:
            return
        if write:
            name = f"iso:{self.world.tenants[tenant].slug}:{next(self.world.counter)}"
            r = self.world.call("POST", "/api/projects", tenant, "token", host=host, json={"name": name})
        else:
            r = self.world.call("GET", "/api/projects", tenant, "token", host=host)
        assert r.status_code == 403 and r.json()["code"] == "tenant_mismatch", r.text

    @rule(tenant=TENANT)
    def suspend_or_resume(self, tenant: int) -> None:
        self.settle(tenant)
        old = self.status[tenant]
        new = "suspended" if old == "active" else "active"
        r = self.world.control.patch(f"/v1/tenants/{self.world.tenants[tenant].id}", json={"status": new})
        assert r.status_code == 200 and r.json()["status"] == new, r.text
        self.status[tenant] = new
        self.pending[tenant] = Pending(old=old, new=new, since=time.monotonic())

    @precondition(lambda self: bool(self.pending))
    @rule()
    def wait_until_changes_are_visible(self) -> None:
        for tenant in list(self.pending):
            self.settle(tenant)

    # -- the invariant --------------------------------------------------------------------------
    @invariant()
    def every_answer_holds_exactly_its_own_tenants_markers(self) -> None:
        observed, self.observed = self.observed, []
        for tenant, names in observed:
            slug = self.world.tenants[tenant].slug
            foreign = [n for n in names if marker_owner(n) != slug]
            assert not foreign, f"tenant {slug} was answered with other tenants' rows: {foreign}"
            assert len(names) == len(set(names)), f"duplicate rows for {slug}: {names}"
            expected = self.world.expected[tenant]
            assert set(names) == expected, (
                f"{slug}: missing {sorted(expected - set(names))}, unexpected {sorted(set(names) - expected)}")

    def teardown(self) -> None:
        for tenant, status in enumerate(self.status):
            self.settle(tenant)
            if status == "suspended":
                self.suspend_or_resume(tenant)
                self.settle(tenant)
        self.every_answer_holds_exactly_its_own_tenants_markers()


def test_interleaved_requests_only_ever_see_their_own_tenant(stack: Stack, machine_tenants: list[TenantUnderTest]):
    """A plain (synchronous) test: the clients run their apps on event loops of their own threads,
    so the session loop of the async fixtures is left alone."""
    started = time.monotonic()
    config = router_config(stack)
    with TestClient(create_demo_app(config)) as app, TestClient(_control_plane(stack)) as control:
        control.headers["Authorization"] = f"Bearer {stack.settings.admin_token}"
        world = World(app=app, control=control, tenants=machine_tenants,
                      tokens=[token_for(stack, t) for t in machine_tenants],
                      expected=[set() for _ in machine_tenants])
        for tenant in machine_tenants:  # fresh tenants: nothing to see yet
            r = app.get("/api/projects", headers={"Host": f"{tenant.slug}.localhost"})
            assert r.status_code == 200 and r.json() == [], r.text

        run_state_machine_as_test(
            lambda: TenantIsolationMachine(world),
            settings=settings(max_examples=15, stateful_step_count=60, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow]),
        )
    elapsed = time.monotonic() - started
    assert world.examples >= 10 and world.requests >= 600, (world.examples, world.requests)
    assert sum(map(len, world.expected)) >= 30, "the machine should have written many markers"
    print(f"\nstate machine: {world.examples} examples, {world.requests} routed requests, "
          f"{sum(map(len, world.expected))} markers, {elapsed:.1f}s")


def _control_plane(stack: Stack) -> Litestar:
    from control_plane.api.app import create_app

    return create_app(stack.settings)


# --- 2. pooled connections come back clean ----------------------------------------------------


@pytest.fixture(scope="module")
async def pool_tenants(api) -> list[TenantUnderTest]:
    """Two tenants of each tier: one to dirty a connection, one whose role must stay out of reach."""
    return await create_tenants(api, tuple((tier, 2) for tier in TIERS))


@pytest.fixture(scope="module")
async def directory(stack: Stack) -> AsyncIterator[Directory]:
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        yield Directory(catalog, ttl=30, negative_ttl=1)
    finally:
        await catalog.close()


async def placement_of(directory: Directory, tenant: TenantUnderTest) -> Placement:
    placement = await directory.get_placement(TenantKey("id", tenant.id))
    assert placement is not None and placement.status.value == "active"
    return placement


async def dirty_session(conn: asyncpg.Connection, own_role: str, other_role: str | None = None) -> None:
    """Session-level state of every kind a handler could leave behind (inside its transaction)."""
    await conn.execute("SET application_name = 'dirty'; SET statement_timeout = '1234s'")
    await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    await conn.execute("SELECT set_config('app.tenant_id', 'someone-else', false)")
    await conn.execute(f'SET ROLE "{own_role}"')  # the only role a tenant role may become
    if other_role is not None:
        for sql in (f'SET ROLE "{other_role}"', f'SET SESSION AUTHORIZATION "{other_role}"'):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():  # a savepoint: the handler's transaction goes on
                    await conn.execute(sql)
    await conn.execute("CREATE TEMP TABLE leftover (secret text); INSERT INTO leftover VALUES ('psst')")
    await conn.execute("PREPARE sneaky AS SELECT 42")
    await conn.execute("LISTEN tenant_channel")
    try:  # refused where tenants share a database (provisioning/steps/guard.py); held otherwise
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_lock(4242), pg_advisory_lock_shared(4343)")
    except asyncpg.InsufficientPrivilegeError:
        pass
    await conn.execute("DECLARE held CURSOR WITH HOLD FOR SELECT 1")
    await conn.execute("SELECT nextval(pg_get_serial_sequence('projects', 'id'))")
    await conn.execute("SET search_path = pg_catalog")


async def assert_clean_session(conn: asyncpg.Connection, own_role: str) -> None:
    assert await conn.fetchval("SHOW application_name") == ""
    assert await conn.fetchval("SHOW statement_timeout") == "0"
    assert await conn.fetchval("SHOW search_path") == '"$user", public'
    assert await conn.fetchval("SHOW default_transaction_isolation") == "read committed"
    assert await conn.fetchval("SHOW transaction_isolation") == "read committed"
    assert await conn.fetchval("SELECT coalesce(current_setting('app.tenant_id', true), '')") == ""
    assert await conn.fetchval("SELECT current_user") == own_role
    assert await conn.fetchval("SELECT session_user") == own_role
    assert await conn.fetchval("SELECT to_regclass('pg_temp.leftover')") is None
    assert await conn.fetchval(f"SELECT count(*) FROM {conn._prepared_view} s WHERE s.from_sql") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
    assert await conn.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
    if conn._prepared_view == PREPARED_VIEW:  # else pg_locks is closed to it: see the admin's check below
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                   "AND pid = pg_backend_pid()") == 0
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):  # currval forgotten: DISCARD SEQUENCES
        async with conn.transaction():
            await conn.fetchval("SELECT currval(pg_get_serial_sequence('projects', 'id'))")


@pytest.mark.parametrize("tier", TIERS)
async def test_the_next_borrower_sees_no_session_state(stack: Stack, pool_tenants, directory, tier: str):
    tenant, other = [t for t in pool_tenants if t.tier == tier][:2]
    placement = await placement_of(directory, tenant)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    try:
        async with tenant_transaction(registry, placement) as conn:
            assert conn.is_in_transaction()
            pid = conn.get_server_pid()
            await dirty_session(conn, tenant.role, other.role)
        async with tenant_transaction(registry, placement) as conn:
            assert conn.get_server_pid() == pid, "tenant_max_connections=1: the same backend again"
            assert conn.is_in_transaction()
            await assert_clean_session(conn, tenant.role)
        # the session-level locks really are free for everyone else
        admin = await asyncpg.connect(stack.pg.dsn(placement.database))
        try:
            assert await admin.fetchval("SELECT pg_try_advisory_lock(4242) AND pg_try_advisory_lock(4343)")
        finally:
            await admin.close()
    finally:
        await registry.close()


@pytest.mark.parametrize("where", ["during_a_query", "between_queries"])
@pytest.mark.parametrize("tier", TIERS)
async def test_a_task_cancelled_mid_transaction_leaves_nothing(stack: Stack, pool_tenants, directory, tier, where):
    tenant = [t for t in pool_tenants if t.tier == tier][0]
    placement = await placement_of(directory, tenant)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    marker = f"never-committed-{uuid.uuid4().hex}"
    inside = asyncio.Event()
    pids: list[int] = []

    async def interrupted() -> None:
        async with tenant_transaction(registry, placement) as conn:
            pids.append(conn.get_server_pid())
            await conn.execute("INSERT INTO projects (name) VALUES ($1)", marker)
            await conn.execute("SET LOCAL application_name = 'mid-transaction'")
            await dirty_session(conn, tenant.role)  # PREPARE and session locks outlive a rollback
            inside.set()
            if where == "during_a_query":
                await conn.execute("SELECT pg_sleep(30)")
            else:
                await asyncio.sleep(30)

    try:
        task = asyncio.create_task(interrupted())
        await asyncio.wait_for(inside.wait(), 10)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with tenant_transaction(registry, placement) as conn:
            assert conn.get_server_pid() == pids[0]
            assert await conn.fetchval("SELECT count(*) FROM projects WHERE name = $1", marker) == 0
            await assert_clean_session(conn, tenant.role)
    finally:
        await registry.close()


async def test_handlers_get_a_transaction_and_a_clean_connection_through_the_router(stack: Stack, pool_tenants):
    tenant = pool_tenants[0]
    headers = {"Host": f"{tenant.slug}.localhost"}
    app = demo_app_with_probes(router_config(stack, tenant_max_connections=1))
    async with routed_client(app) as client:
        r = await client.get("/probe/dirty", headers=headers)
        assert r.status_code == 200, r.text
        pid = r.json()["pid"]
        for _ in range(3):
            r = await client.get("/probe/scope", headers=headers)
            assert r.status_code == 200, r.text
            probe = r.json()
            assert probe["pid"] == pid, "tenant_max_connections=1: the dirtied backend again"
            assert probe["in_transaction"] is True
            assert probe["xid"] == probe["first"]["xid"], "both statements ran in one transaction"
            assert probe["tenant_before"] == probe["tenant_after"] == tenant.slug
            assert probe["user_"] == probe["session_user_"] == tenant.role
            assert probe["db"] == identifiers.tenant_database(tenant.id)
            assert {k: probe[k] for k in ("application_name", "statement_timeout", "search_path",
                                          "default_isolation", "app_tenant_id", "temp_table", "prepared",
                                          "listening", "cursors", "advisory")} == {
                "application_name": "", "statement_timeout": "0", "search_path": '"$user", public',
                "default_isolation": "read committed", "app_tenant_id": "", "temp_table": False,
                "prepared": 0, "listening": 0, "cursors": 0, "advisory": 0}
        r = await client.post("/api/projects", json={"name": "x" * 201}, headers=headers)  # a failing request
        assert r.status_code == 422
        assert (await client.get("/probe/scope", headers=headers)).json()["in_transaction"] is True
    assert current_tenant_or_none() is None


# RESET ALL leaves `role` alone (GUC_NO_RESET_ALL): RESET_SQL resets it explicitly.
async def test_set_role_does_not_outlive_the_borrow(stack: Stack, pool_tenants, directory):
    tenant = pool_tenants[0]
    placement = await placement_of(directory, tenant)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    try:
        async with tenant_transaction(registry, placement) as conn:
            await conn.execute(f'SET ROLE "{tenant.role}"')
        async with tenant_transaction(registry, placement) as conn:
            assert await conn.fetchval("SELECT current_setting('role')") == "none"
    finally:
        await registry.close()


# asyncpg callbacks a borrower adds (listeners, log listeners, query loggers) must not hear the
# next borrower: TenantConnection.reset() drops them.
@pytest.mark.parametrize("callback", ["log_listener", "notification_listener", "query_logger"])
async def test_client_side_callbacks_do_not_outlive_the_borrow(stack: Stack, pool_tenants, directory, callback):
    tenant = pool_tenants[0]
    placement = await placement_of(directory, tenant)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1)
    heard: list[Any] = []
    try:
        async with tenant_transaction(registry, placement) as conn:
            if callback == "log_listener":
                conn.add_log_listener(lambda _c, message: heard.append(message.message))
            elif callback == "notification_listener":
                await conn.add_listener("tenant_channel", lambda *args: heard.append(args[3]))
            else:
                conn.add_query_logger(lambda record: heard.append(record.args))
        heard.clear()  # whatever the first borrower's own work produced
        async with tenant_transaction(registry, placement) as conn:  # the next request
            await conn.execute("DO $$ BEGIN RAISE NOTICE 'next borrower notice'; END $$")
            await conn.execute("LISTEN tenant_channel")
        async with tenant_transaction(registry, placement) as conn:
            await conn.execute("LISTEN tenant_channel")
            await conn.execute("SELECT pg_notify('tenant_channel', 'next borrower payload')")
            await conn.fetchval("SELECT $1::text", "next borrower argument")
        await asyncio.sleep(0.2)
        assert [h for h in heard if "next borrower" in str(h)] == []
    finally:
        await registry.close()


# --- 3. a thousand concurrent requests --------------------------------------------------------


@pytest.fixture(scope="module")
async def crowd(api) -> list[TenantUnderTest]:
    return await create_tenants(api, CROWD_MIX)


async def test_a_thousand_concurrent_requests_never_cross_talk(stack: Stack, crowd: list[TenantUnderTest]):
    requests_per_run = 1000
    config = router_config(stack, acquire_timeout_seconds=25.0)  # queueing is fine here; 503s are not
    app = demo_app_with_probes(config)
    tokens = {t.id: token_for(stack, t) for t in crowd}
    roles = [t.role for t in crowd]
    written: dict[str, set[str]] = {t.slug: set() for t in crowd}
    peak = {"total": 0, "per_tenant": 0}
    stop = asyncio.Event()

    async def sample_backends() -> None:
        admin = await asyncpg.connect(stack.pg.dsn())
        try:
            while not stop.is_set():
                counts = await admin.fetch("SELECT usename, count(*) AS n FROM pg_stat_activity "
                                           "WHERE usename = ANY($1::text[]) GROUP BY usename", roles)
                peak["total"] = max(peak["total"], sum(r["n"] for r in counts))
                peak["per_tenant"] = max([peak["per_tenant"], *(r["n"] for r in counts)])
                await asyncio.sleep(0.01)
        finally:
            await admin.close()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        tenant = crowd[i % len(crowd)]
        if i % 2:
            headers = {"Host": f"{tenant.slug}.localhost"}
        else:
            headers = {"Host": "localhost", "Authorization": f"Bearer {tokens[tenant.id]}"}
        name = f"crowd:{tenant.slug}:{i}"
        await asyncio.sleep(random.random() * 0.01)
        r = await client.post("/api/projects", json={"name": name}, headers=headers)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name
        written[tenant.slug].add(name)
        assert current_tenant_or_none() is None, "a tenant scope leaked out of a request"
        await asyncio.sleep(random.random() * 0.01)
        r = await client.get("/api/projects", headers=headers)
        assert r.status_code == 200, r.text
        names = [p["name"] for p in r.json()]
        foreign = [n for n in names if marker_owner(n) != tenant.slug]
        assert not foreign, f"{tenant.slug} saw {foreign[:5]}"
        assert name in names, "a committed write must be visible to the next request"
        assert current_tenant_or_none() is None
        if i % 4 == 0:  # the handler's view: its tenant and its database, across an await
            r = await client.get("/probe/scope", headers=headers)
            assert r.status_code == 200, r.text
            probe = r.json()
            assert probe["tenant_before"] == probe["tenant_after"] == tenant.slug
            # the role the handler works as: the tenant's own (dedicated: its login; schema: SET LOCAL
            # ROLE), or the shared database's app role (rows are told apart by RLS there)
            user = identifiers.SHARED_APP_ROLE if tenant.tier == "shared" else tenant.role
            assert probe["user_"] == probe["first"]["user_"] == user
            assert probe["db"] == probe["first"]["db"] == layout_of(tenant.tier).names(tenant.id)[0]
            assert probe["in_transaction"] is True and probe["xid"] == probe["first"]["xid"]

    async with routed_client(app) as client:
        router = app.state.tenant_router
        sampler = asyncio.create_task(sample_backends())
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(one(client, i) for i in range(requests_per_run)),
                                           return_exceptions=True)
        finally:
            elapsed = time.monotonic() - started
            stop.set()
            await sampler
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} of {requests_per_run} failed; first: {failures[0]!r}"
        for tenant in crowd:  # and afterwards every tenant holds exactly its own writes
            r = await client.get("/api/projects", headers={"Host": f"{tenant.slug}.localhost"})
            assert {p["name"] for p in r.json()} == written[tenant.slug]
        stats = router.pools.stats()

    assert current_tenant_or_none() is None
    server = stats["servers"][f"127.0.0.1:{stack.pg.port}"]
    assert server["peak"] <= server["limit"] == 200
    assert peak["per_tenant"] <= config.tenant_max_connections
    assert peak["total"] <= min(200, len(crowd) * config.tenant_max_connections)
    assert elapsed < 30, f"{requests_per_run} concurrent request chains took {elapsed:.1f}s"
    print(f"\n{requests_per_run} concurrent chains in {elapsed:.1f}s; backends peak {peak}; pools {stats}")


# --- 4. no tenant scope, no connection ----------------------------------------------------------


async def test_no_connection_without_a_tenant_scope(stack: Stack, pool_tenants, directory):
    registry = PoolRegistry(stack.settings.secret_key)
    try:
        assert current_tenant_or_none() is None
        with pytest.raises(NoTenantScope):
            async with tenant_transaction(registry):
                pytest.fail("a connection was handed out without a tenant")
        placement = await placement_of(directory, pool_tenants[0])
        with tenant_scope(placement):
            async with tenant_transaction(registry) as conn:  # inside a scope: the scope's tenant
                assert await conn.fetchval("SELECT current_user") == placement.role
        assert current_tenant_or_none() is None
        with pytest.raises(NoTenantScope):  # and again once the scope has ended
            async with tenant_transaction(registry):
                pytest.fail("a connection was handed out after the tenant scope ended")
    finally:
        await registry.close()


async def test_a_route_outside_tenant_resolution_gets_no_connection(stack: Stack, pool_tenants):
    app = demo_app_with_probes(router_config(stack))
    async with routed_client(app) as client:
        # /health is excluded from tenant resolution: even with a tenant's Host, no scope, no connection
        r = await client.get("/health/leaky", headers={"Host": f"{pool_tenants[0].slug}.localhost"})
        assert r.status_code == 500 and r.json()["code"] == "no_tenant_scope", r.text
        assert len(app.state.tenant_router.pools) == 0, "no pool may even be opened"
