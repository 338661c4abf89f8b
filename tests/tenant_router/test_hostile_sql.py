"""A compromised tenant application: a handler that runs whatever SQL an attacker sends on its routed
connection (what a SQL injection amounts to), for tenants of every tier sharing one server and,
on the schema and shared tiers, one database and one pool.

Hypothesis picks an attacker, a victim and a sequence of statements aimed at the victim (its id,
its role, its schema) from the ways out we know of: the shared tier's setting, SET ROLE and
search_path, COMMIT/BEGIN, RESET ALL and DISCARD ALL, prepared statements, held cursors, LISTEN,
advisory locks, temporary objects that shadow tenant tables, monitoring views, signalling
functions, forged or copied bindings. After every request:
- the attacker's answer holds no row of another tenant;
- while the attacker's transaction was still open, no other tenant's row was locked;
- every other tenant's rows are what they were (nothing changed, planted or deleted);
- the next borrower of every pool (every tenant, once) is bound to its own tenant and sees
  exactly its own rows.
At the end no other tenant's role or schema was touched (role attributes, settings, passwords,
schema and table privileges are as before).

LOCK TABLE is not among the statements: a role that may UPDATE a table may lock all of it, which
stalls the other tenants of a shared table (a known limit, in the README) without reaching their rows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar import Litestar, post
from litestar.di import NamedDependency
from litestar.testing import TestClient

from contracts import identifiers
from contracts.placement import Placement
from demo_app.app import create_app as create_demo_app
from tenant_router.config import RouterConfig
from tests.conftest import Stack, unique_slug, wait_for

MIX = (("dedicated", 1), ("schema", 2), ("shared", 2))

# {victim_id}, {victim_role}, {victim_schema}: the victim's names. An attack is some switches (ways to
# become the victim), then actions on the victim's rows, with anything else in between.
SWITCHES = (
    "SELECT set_config('app.tenant_id', '{victim_id}', false)",
    "SELECT set_config('app.tenant_id', '{victim_id}', true)",
    "SET app.tenant_id = '{victim_id}'",
    "SET ROLE {victim_role}",
    "SET SESSION AUTHORIZATION {victim_role}",
    "SET search_path = {victim_schema}, public",
    "SET search_path = pg_temp, {victim_schema}, public",
    "SELECT set_config('tp.binding', current_setting('tp.binding', true), false)",
    "SELECT tp_guard.bind('{victim_id}'::uuid, 0, 'forged')",
    "SET row_security = off",
)
ACTIONS = (
    "SELECT name FROM projects",
    "SELECT name FROM public.projects",
    "SELECT name FROM {victim_schema}.projects",
    "SELECT name FROM projects FOR UPDATE",
    "SELECT name FROM {victim_schema}.projects FOR UPDATE",
    "UPDATE projects SET name = 'pwned' WHERE tenant_id = '{victim_id}'",
    "UPDATE {victim_schema}.projects SET name = 'pwned'",
    "DELETE FROM projects WHERE tenant_id = '{victim_id}'",
    "DELETE FROM {victim_schema}.projects",
    "INSERT INTO projects (tenant_id, name) VALUES ('{victim_id}', 'planted')",
    "INSERT INTO {victim_schema}.projects (name) VALUES ('planted')",
    "EXECUTE stolen",
    "FETCH ALL FROM held",
    "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
)
NOISE = (
    "RESET ROLE",
    "RESET ALL",
    "DISCARD ALL",
    "COMMIT",
    "BEGIN",
    "COMMIT; BEGIN",
    "DEALLOCATE ALL",
    "ROLLBACK",
    "UPDATE projects SET name = name",
    "PREPARE stolen AS SELECT name FROM projects",
    "DECLARE held CURSOR WITH HOLD FOR SELECT name FROM projects",
    "LISTEN tenant_events",
    "SELECT pg_advisory_lock(7)",
    "CREATE TEMP TABLE projects (name text)",
    "CREATE TEMP VIEW projects AS SELECT 'shadow'::text AS name",
    "CREATE FUNCTION public.tp_evil() RETURNS text LANGUAGE sql AS 'SELECT 1'",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND usename = session_user",
)
STATEMENTS = SWITCHES + ACTIONS + NOISE


@st.composite
def attacks(draw: st.DrawFn) -> list[str]:
    noise = st.lists(st.sampled_from(NOISE), max_size=2)
    out = draw(noise) + draw(st.lists(st.sampled_from(SWITCHES), min_size=1, max_size=2)) + draw(noise)
    return out + draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2))


# the known ways across, always tried (Hypothesis runs explicit examples first): the shared tier's
# setting, and the schema tier's SET ROLE, each with a read, a write and a lock
KNOWN = [
    ["SELECT set_config('app.tenant_id', '{victim_id}', false)", "SELECT name FROM projects"],
    ["SELECT set_config('app.tenant_id', '{victim_id}', true)", "UPDATE projects SET name = 'pwned' WHERE tenant_id = '{victim_id}'"],
    ["SET app.tenant_id = '{victim_id}'", "COMMIT; BEGIN", "SELECT name FROM projects FOR UPDATE"],
    ["SET ROLE {victim_role}", "SELECT name FROM {victim_schema}.projects"],
    ["SET ROLE {victim_role}", "SET search_path = {victim_schema}, public", "INSERT INTO projects (name) VALUES ('planted')"],
    ["SET ROLE {victim_role}", "SELECT name FROM {victim_schema}.projects FOR UPDATE"],
    # out of the routed transaction, asyncpg's cached statements taken away: the next borrower of
    # the pool (another tenant) must still be served
    ["COMMIT", "DISCARD ALL", "SELECT name FROM projects"],
    ["COMMIT", "DEALLOCATE ALL", "BEGIN", "SELECT name FROM projects"],
]


@dataclass(frozen=True)
class Tenant:
    id: str
    slug: str
    tier: str

    @property
    def names(self) -> dict[str, str]:
        return {"victim_id": self.id, "victim_role": identifiers.tenant_role(self.id),
                "victim_schema": identifiers.tenant_schema(self.id)}


class Attack(msgspec.Struct):
    statements: list[str]


@dataclass
class Probe:
    """Checks from an admin session while the attacker's transaction is still open."""

    stack: Stack
    tenants: list[Tenant]
    violations: list[str]

    async def locked_rows_of_others(self, attacker: str) -> None:
        pg = self.stack.pg
        others = [t for t in self.tenants if t.slug != attacker]
        for database, tables in ((identifiers.SHARED_DATABASE, ["public.projects"]),
                                 (identifiers.SCHEMAS_DATABASE,
                                  [f"{identifiers.tenant_schema(t.id)}.projects" for t in others if t.tier == "schema"])):
            admin = await asyncpg.connect(pg.dsn(database))
            try:
                await admin.execute("SET lock_timeout = '200ms'")
                for table in tables:
                    where = ""
                    if database == identifiers.SHARED_DATABASE:
                        ids = [t.id for t in others if t.tier == "shared"]
                        where = " WHERE tenant_id::text = ANY('{%s}'::text[])" % ",".join(ids)
                    try:
                        async with admin.transaction():
                            await admin.fetch(f"SELECT 1 FROM {table}{where} FOR UPDATE NOWAIT")
                    except asyncpg.LockNotAvailableError as exc:
                        self.violations.append(f"{attacker} locked rows of {table}: {exc}")
            finally:
                await admin.close()


def hostile_app(config: RouterConfig, probe: Probe) -> Litestar:
    @post("/hostile")
    async def hostile(data: Attack, db: NamedDependency[asyncpg.Connection], tenant: NamedDependency[Placement]) -> list[str]:
        seen: list[str] = []
        for sql in data.statements:
            try:
                await db.execute("SAVEPOINT hostile")
            except asyncpg.PostgresError:
                pass
            try:
                # prepared afresh, not from asyncpg's statement cache: a cached FETCH described while
                # its cursor did not exist (no columns) would not decode rows once it does
                for row in await (await db.prepare(sql)).fetch():
                    seen.extend(str(v) for v in row.values())
            except asyncpg.PostgresError:
                try:
                    await db.execute("ROLLBACK TO SAVEPOINT hostile")
                except asyncpg.PostgresError:
                    pass
        await probe.locked_rows_of_others(tenant.slug)
        return seen

    app = create_demo_app(config)
    app.register(hostile)
    return app


def owner(marker: str) -> str | None:
    parts = marker.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "hostile" else None


async def all_rows(stack: Stack, tenants: list[Tenant]) -> dict[str, set[str]]:
    """Every tenant's rows, read as the admin (below row-level security)."""
    rows: dict[str, set[str]] = {t.slug: set() for t in tenants}
    for t in tenants:
        if t.tier == "dedicated":
            database, table, where = identifiers.tenant_database(t.id), "public.projects", ""
        elif t.tier == "schema":
            database, table, where = identifiers.SCHEMAS_DATABASE, f"{identifiers.tenant_schema(t.id)}.projects", ""
        else:
            database, table, where = identifiers.SHARED_DATABASE, "public.projects", f" WHERE tenant_id = '{t.id}'"
        admin = await asyncpg.connect(stack.pg.dsn(database))
        try:
            rows[t.slug] = {r["name"] for r in await admin.fetch(f"SELECT name FROM {table}{where}")}
        finally:
            await admin.close()
    return rows


async def roles_and_schemas(stack: Stack, tenants: list[Tenant]) -> dict[str, Any]:
    """What an attacker must not change about anyone: roles (attributes, password, settings) and
    the tenant schemas with their tables' privileges."""
    roles = [identifiers.tenant_role(t.id) for t in tenants] + [identifiers.SCHEMA_GATEWAY_ROLE,
                                                               identifiers.SHARED_APP_ROLE]
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        found = [dict(r) for r in await admin.fetch(
            "SELECT a.rolname, a.rolcanlogin, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, "
            "a.rolbypassrls, a.rolpassword, a.rolvaliduntil, a.rolconnlimit, "
            "(SELECT array_agg(s.setconfig::text) FROM pg_db_role_setting s WHERE s.setrole = a.oid) AS settings "
            "FROM pg_authid a WHERE a.rolname = ANY($1::text[]) ORDER BY a.rolname", roles)]
    finally:
        await admin.close()
    inside = await asyncpg.connect(stack.pg.dsn(identifiers.SCHEMAS_DATABASE))
    try:
        schemas = [dict(r) for r in await inside.fetch(
            "SELECT n.nspname, n.nspacl::text, c.relname, c.relacl::text, c.relrowsecurity, "
            "(SELECT array_agg(p.polname || ':' || pg_get_expr(p.polqual, p.polrelid) ORDER BY p.polname) "
            " FROM pg_policy p WHERE p.polrelid = c.oid) AS policies "
            "FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname = ANY($1::text[]) ORDER BY 1, 3",
            [identifiers.tenant_schema(t.id) for t in tenants])]
    finally:
        await inside.close()
    return {"roles": found, "schemas": schemas}


@pytest.fixture(scope="module")
async def hostile_tenants(api) -> list[Tenant]:
    async def one(tier: str) -> Tenant:
        r = await api.post("/v1/tenants", json={"slug": unique_slug("hx"), "name": "Hostile", "tier": tier})
        assert r.status_code == 202, r.text
        body = await wait_for(api, r.json()["tenant"]["id"], "active")
        return Tenant(id=body["id"], slug=body["slug"], tier=tier)

    return list(await asyncio.gather(*(one(tier) for tier, n in MIX for _ in range(n))))


def test_attacker_sql_on_a_routed_connection_reaches_no_other_tenant(stack: Stack, hostile_tenants: list[Tenant]):
    tenants = hostile_tenants
    probe = Probe(stack, tenants, [])
    config = RouterConfig(catalog_dsn=stack.catalog_dsn, secret_key=stack.settings.secret_key,
                          redis_url=stack.settings.redis_url, apex="localhost", tenant_max_connections=2,
                          shared_pool_max_connections=3)
    started = time.monotonic()
    with TestClient(hostile_app(config, probe)) as app:
        for t in tenants:
            for n in range(2):
                r = app.post("/api/projects", json={"name": f"hostile:{t.slug}:{n}"}, headers={"Host": f"{t.slug}.localhost"})
                assert r.status_code == 201, r.text
        loop = asyncio.new_event_loop()
        try:
            expected = loop.run_until_complete(all_rows(stack, tenants))
            before = loop.run_until_complete(roles_and_schemas(stack, tenants))
            assert all(len(v) == 2 for v in expected.values()), expected
            examples = []

            def known(test):
                for attacker in tenants:
                    for statements in KNOWN:
                        test = example(attacker=attacker, victim=attacker, same_tier=True, statements=statements)(test)
                return test

            @known
            @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(attacker=st.sampled_from(tenants), victim=st.sampled_from(tenants), same_tier=st.booleans(),
                   statements=attacks())
            def attack(attacker: Tenant, victim: Tenant, same_tier: bool, statements: list[str]) -> None:
                if same_tier:  # a neighbour in the same database (and pool), where a leak would show
                    victim = next((t for t in tenants if t.tier == attacker.tier and t != attacker), victim)
                if victim == attacker:  # its own rows are the attacker's to change: aim at the next tenant
                    victim = tenants[(tenants.index(attacker) + 1) % len(tenants)]
                examples.append(1)
                probe.violations.clear()
                sql = [s.format(**victim.names) for s in statements]
                r = app.post("/hostile", json={"statements": sql}, headers={"Host": f"{attacker.slug}.localhost"})
                assert r.status_code == 201, r.text
                foreign = [v for v in r.json() if owner(v) not in (None, attacker.slug)]
                assert not foreign, f"{attacker.tier} tenant read {foreign} with {sql}"
                assert not probe.violations, probe.violations
                actual = loop.run_until_complete(all_rows(stack, tenants))
                changed = {slug for slug in expected if actual[slug] != expected[slug] and slug != attacker.slug}
                assert not changed, f"rows of {changed} changed by {attacker.tier} tenant with {sql}"
                expected[attacker.slug] = actual[attacker.slug]  # its own rows are its own to change
                for t in tenants:  # the next borrower of each pool is bound to its own tenant
                    r = app.get("/api/projects", headers={"Host": f"{t.slug}.localhost"})
                    assert r.status_code == 200, (r.text, sql)
                    assert {p["name"] for p in r.json()} == expected[t.slug], (t.tier, sql)

            attack()
            assert loop.run_until_complete(roles_and_schemas(stack, tenants)) == before
        finally:
            loop.close()
    assert len(examples) >= 30
    print(f"\nhostile SQL: {len(examples)} attacks in {time.monotonic() - started:.1f}s")
