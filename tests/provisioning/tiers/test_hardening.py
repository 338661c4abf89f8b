"""What the server itself refuses to the roles tenant SQL runs as, on the tiers whose tenants share a
login role (schema, shared), checked in the catalogs (has_*_privilege, pg_roles) and by trying."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from contracts import guard, identifiers
from contracts.credentials import role_password
from contracts.placement import TenantStatus
from provisioning.reconcile import reconcile
from provisioning.sealing import SecretBox
from tenant_router.binding import tenant_transaction
from tenant_router.directory import Directory
from tenant_router.pools import PoolRegistry
from tenant_router.resolution import TenantKey
from tests.conftest import Stack, unique_slug, wait_for


async def create(api, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": unique_slug("hd"), "name": tier, "tier": tier})
    assert r.status_code == 202, r.text
    return await wait_for(api, r.json()["tenant"]["id"], "active")


def login(stack: Stack, role: str, database: str):
    return asyncpg.connect(host="127.0.0.1", port=stack.pg.port, database=database, user=role,
                           password=role_password(stack.settings.secret_key, role))


@pytest.fixture(scope="module")
async def tenants(api) -> dict[str, dict]:
    return {"schema": await create(api, "schema"), "shared": await create(api, "shared")}


def facing(tenants: dict[str, dict]) -> list[tuple[str, str]]:
    """(role, database): the roles tenant SQL runs as where tenants share a login."""
    return [(identifiers.SHARED_APP_ROLE, identifiers.SHARED_DATABASE),
            (identifiers.SCHEMA_GATEWAY_ROLE, identifiers.SCHEMAS_DATABASE),
            (identifiers.tenant_role(tenants["schema"]["id"]), identifiers.SCHEMAS_DATABASE)]


async def test_tenant_facing_roles_hold_nothing_beyond_row_access(stack: Stack, tenants):
    for role, database in facing(tenants):
        admin = await asyncpg.connect(stack.pg.dsn(database))
        try:
            attrs = await admin.fetchrow("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication "
                                         "FROM pg_roles WHERE rolname = $1", role)
            assert not any(attrs.values()), (role, dict(attrs))
            for powerful in ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                             "pg_read_all_stats", "pg_read_all_data", "pg_write_all_data", "pg_signal_backend",
                             "pg_monitor", identifiers.SCHEMA_GATEWAY_ROLE if role != identifiers.SCHEMA_GATEWAY_ROLE
                             else "pg_database_owner", guard.GUARD_OWNER):
                assert not await admin.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", role, powerful), (role, powerful)
            assert not await admin.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", role)
            assert not await admin.fetchval("SELECT has_database_privilege($1, $2, 'CREATE')", role, database)
            assert not await admin.fetchval("SELECT has_database_privilege($1, $2, 'TEMPORARY')", role, database)
            assert not await admin.fetchval("SELECT has_schema_privilege($1, 'tp_guard', 'CREATE')", role)
            assert not await admin.fetchval("SELECT has_table_privilege($1, 'tp_guard.binding_key', 'SELECT')", role)
            for function in ("pg_stat_get_activity(integer)", "pg_stat_get_backend_activity(integer)",
                             "pg_terminate_backend(integer, bigint)", "pg_cancel_backend(integer)",
                             "pg_read_file(text)", "lo_import(text)"):
                assert not await admin.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function), (
                    role, function)
            owned = await admin.fetchval(
                "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace "
                "WHERE nspowner = r.oid) + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) FROM pg_roles r "
                "WHERE rolname = $1", role)
            assert owned == 0, role
            assert await admin.fetch("SELECT extname FROM pg_extension WHERE extname IN ('dblink', 'postgres_fdw')") == []
        finally:
            await admin.close()


async def test_the_guard_is_owned_by_a_role_that_cannot_log_in_and_pins_its_search_path(stack: Stack, tenants):
    for database in (identifiers.SHARED_DATABASE, identifiers.SCHEMAS_DATABASE):
        admin = await asyncpg.connect(stack.pg.dsn(database))
        try:
            owner = await admin.fetchrow("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = $1", guard.GUARD_OWNER)
            assert owner is not None and not owner["rolcanlogin"] and not owner["rolsuper"]
            functions = await admin.fetch(
                "SELECT p.proname, p.prosecdef, p.proconfig, r.rolname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
                "WHERE p.pronamespace = 'tp_guard'::regnamespace ORDER BY p.proname")
            assert [f["proname"] for f in functions] == ["bind", "bound_tenant", "prepared_statements"]
            for f in functions:
                assert f["prosecdef"] and f["rolname"] == guard.GUARD_OWNER
                assert f["proconfig"] == ["search_path=pg_catalog, pg_temp"]
        finally:
            await admin.close()


async def test_sessions_of_a_shared_login_cannot_see_or_signal_each_other(stack: Stack, tenants):
    for role, database in facing(tenants)[:2]:
        victim, attacker = await login(stack, role, database), await login(stack, role, database)
        try:
            await victim.execute("SELECT 'secret query text'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.fetch("SELECT query FROM pg_stat_activity")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.fetchval("SELECT pg_stat_get_backend_activity(1)")
            for signal in ("pg_terminate_backend", "pg_cancel_backend"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await attacker.fetchval(f"SELECT {signal}($1)", victim.get_server_pid())
            assert await victim.fetchval("SELECT 1") == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.execute("CREATE TABLE public.mine (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.execute("CREATE TEMP TABLE mine (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await attacker.execute("COPY (SELECT 1) TO PROGRAM 'true'")
            # dblink and postgres_fdw are untrusted extensions (superuser only) and not installed; the
            # embedded server ships none, so only the refusal itself is checked here
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.FeatureNotSupportedError)):
                await attacker.execute("CREATE EXTENSION dblink")
        finally:
            await victim.close()
            await attacker.close()


async def test_a_shared_login_learns_nothing_about_the_whole_database(stack: Stack, tenants):
    """Statistics, locks, sizes, other borrowers' cached statements and sequence values are what
    all tenants of the database did together: none of it is readable by the login they share."""
    for role, database in facing(tenants)[:2]:
        attacker = await login(stack, role, database)
        try:
            for sql in ("SELECT relname, n_live_tup FROM pg_stat_user_tables",
                        "SELECT * FROM pg_stat_all_tables", "SELECT * FROM pg_statio_user_tables",
                        "SELECT * FROM pg_stat_database", "SELECT * FROM pg_locks",
                        "SELECT statement FROM pg_prepared_statements", "SELECT * FROM pg_prepared_xacts",
                        "SELECT pg_stat_get_live_tuples(1259)", "SELECT pg_stat_get_db_xact_commit(1)",
                        "SELECT pg_relation_size(1259)", "SELECT pg_total_relation_size(1259)",
                        "SELECT pg_database_size(current_database())", "SELECT pg_blocking_pids(1)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await attacker.fetch(sql)
        finally:
            await attacker.close()
    admin = await asyncpg.connect(stack.pg.dsn(identifiers.SHARED_DATABASE))
    try:
        for seq in await admin.fetch("SELECT schemaname || '.' || sequencename AS name FROM pg_sequences "
                                     "WHERE schemaname = 'public'"):
            assert not await admin.fetchval("SELECT has_sequence_privilege($1, $2, 'SELECT')",
                                            identifiers.SHARED_APP_ROLE, seq["name"]), seq
            assert await admin.fetchval("SELECT has_sequence_privilege($1, $2, 'USAGE')",
                                        identifiers.SHARED_APP_ROLE, seq["name"]), seq
    finally:
        await admin.close()


async def test_a_shared_login_cannot_hold_a_database_wide_advisory_lock(stack: Stack, tenants):
    """Advisory-lock keys are per database, not per tenant: a key held by one tenant's SQL would
    block every other tenant (and our own turn-taking) waiting on it. Releasing stays allowed (the
    router's connection reset releases whatever a borrower held)."""
    for role, database in facing(tenants):
        attacker = await login(stack, role, database) if role != facing(tenants)[2][0] else None
        if attacker is None:  # the schema tenant's own role is reached with SET ROLE from the gateway
            attacker = await login(stack, identifiers.SCHEMA_GATEWAY_ROLE, database)
            await attacker.execute(f"SET ROLE {identifiers.quote(role)}")
        try:
            for sql in ("SELECT pg_advisory_lock(1)", "SELECT pg_advisory_lock(1, 2)",
                        "SELECT pg_try_advisory_lock(1)", "SELECT pg_advisory_lock_shared(1)",
                        "SELECT pg_try_advisory_lock_shared(1, 2)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await attacker.fetch(sql)
            for sql in ("SELECT pg_advisory_xact_lock(1)", "SELECT pg_try_advisory_xact_lock(1, 2)",
                        "SELECT pg_advisory_xact_lock_shared(1)", "SELECT pg_try_advisory_xact_lock_shared(1)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with attacker.transaction():
                        await attacker.fetch(sql)
            assert await attacker.fetchval("SELECT pg_advisory_unlock(1)") is False
            await attacker.execute("SELECT pg_advisory_unlock_all()")
        finally:
            await attacker.close()
    admin = await asyncpg.connect(stack.pg.dsn(identifiers.SHARED_DATABASE))
    try:  # the admin (workers taking turns, migrations) keeps them
        assert await admin.fetchval("SELECT pg_try_advisory_lock(1)") is True
        assert await admin.fetchval("SELECT pg_advisory_unlock(1)") is True
    finally:
        await admin.close()


async def test_the_next_borrower_cannot_read_what_the_last_one_prepared(stack: Stack, tenants):
    """asyncpg caches every statement it prepares on the connection; the next borrower of a shared
    pool (another tenant) must not list them, and what a borrower PREPAREd itself is gone."""
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=1)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1, shared_pool_max_connections=1)
    try:
        directory = Directory(catalog, ttl=30, negative_ttl=1)
        for tier in ("shared", "schema"):
            placement = await directory.get_placement(TenantKey("id", tenants[tier]["id"]))
            assert placement is not None
            async with tenant_transaction(registry, placement) as conn:
                await conn.fetchval("SELECT 'a secret of the last borrower'::text")
                await conn.execute("PREPARE left_behind AS SELECT 1")
            async with tenant_transaction(registry, placement) as conn:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT statement FROM pg_prepared_statements")
            async with tenant_transaction(registry, placement) as conn:
                assert await conn.fetch("SELECT name FROM tp_guard.prepared_statements() WHERE from_sql") == []
                with pytest.raises(asyncpg.InvalidSQLStatementNameError):
                    await conn.execute("EXECUTE left_behind")
    finally:
        await registry.close()
        await catalog.close()


async def test_the_binding_is_never_a_prepared_statement(stack: Stack, tenants):
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=1)
    registry = PoolRegistry(stack.settings.secret_key, tenant_max_connections=1, shared_pool_max_connections=1)
    try:
        directory = Directory(catalog, ttl=30, negative_ttl=1)
        for tier in ("shared", "schema"):
            placement = await directory.get_placement(TenantKey("id", tenants[tier]["id"]))
            assert placement is not None and placement.status == TenantStatus.active
            for _ in range(2):
                async with tenant_transaction(registry, placement) as conn:
                    await conn.fetchval("SELECT 1")
                    # asyncpg's statement cache is what it keeps prepared on the server (the
                    # tenant's session cannot list it there any more: pg_prepared_statements is closed)
                    statements = [key[0] for key in conn._con._stmt_cache._entries]
            assert "SELECT 1" in statements and not [s for s in statements if "tp_guard" in s], statements
    finally:
        await registry.close()
        await catalog.close()


async def test_a_login_role_that_alters_itself_is_reported_and_put_back(stack: Stack, tenants):
    """PostgreSQL lets a role change its own password and settings, and no privilege stops it, so
    the reconciler finds it and puts the role back; the router's derived password works again."""
    role, database = identifiers.SHARED_APP_ROLE, identifiers.SHARED_DATABASE
    box = SecretBox(stack.settings.secret_key)

    async def drift() -> set[str]:
        catalog = await asyncpg.connect(stack.catalog_dsn)
        try:
            report = await reconcile(catalog, box)
        finally:
            await catalog.close()
        return {f.detail.split(":")[0].removesuffix("; put back")
                for f in report.findings if f.kind == "login_drift" and f.object == role}

    assert await drift() == set()
    own = await login(stack, role, database)
    try:
        await own.execute(f"ALTER ROLE {role} SET statement_timeout = '1ms'")
        await own.execute(f"ALTER ROLE {role} IN DATABASE {database} SET work_mem = '64kB'")
        await own.execute(f"ALTER ROLE {role} PASSWORD 'chosen-by-the-attacker'")
    finally:
        await own.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await (await login(stack, role, database)).close()
    assert await drift() == {"settings of its own", "its password is not the derived one (the router cannot log in)"}
    assert await drift() == set()  # put back by the first run
    again = await login(stack, role, database)
    try:
        assert await again.fetchval("SHOW statement_timeout") == "0" and await again.fetchval("SHOW work_mem") != "64kB"
    finally:
        await again.close()


@pytest.mark.parametrize("role", [identifiers.SHARED_APP_ROLE, identifiers.SCHEMA_GATEWAY_ROLE])
async def test_the_login_watch_puts_a_shared_login_role_back(stack: Stack, tenants, role: str):
    """The worker's frequent watch (LOGIN_CHECK_INTERVAL_SECONDS) of the roles a whole tier shares."""
    from provisioning.login_drift import watch_shared_logins

    database = identifiers.SHARED_DATABASE if role == identifiers.SHARED_APP_ROLE else identifiers.SCHEMAS_DATABASE
    box = SecretBox(stack.settings.secret_key)
    own = await login(stack, role, database)
    try:
        await own.execute(f"ALTER ROLE {role} PASSWORD 'chosen-by-the-attacker'")
    finally:
        await own.close()
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        repaired = await watch_shared_logins(catalog, box)
        assert [(r, d.split(" (")[0]) for _, r, d in repaired] == [(role, "its password is not the derived one")]
        assert await watch_shared_logins(catalog, box) == []
    finally:
        await catalog.close()
    await (await login(stack, role, database)).close()  # the router's password works again


OLD_POLICY = "tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid"


@pytest.mark.parametrize("tier", ["shared", "schema"])
async def test_a_migration_brings_a_database_made_before_the_guard_under_it(stack: Stack, tenants, tier: str):
    """A database made by an older release has the setting-based policy (shared) or none (schema):
    a migrate operation, even one with nothing to upgrade, puts the verified binding in place."""
    from provisioning.context import StepContext
    from provisioning.tiers import tier_manager

    tenant = tenants[tier]
    database = identifiers.SHARED_DATABASE if tier == "shared" else identifiers.SCHEMAS_DATABASE
    table = "public.projects" if tier == "shared" else f"{identifiers.tenant_schema(tenant['id'])}.projects"
    admin = await asyncpg.connect(stack.pg.dsn(database))
    catalog = await asyncpg.create_pool(stack.catalog_dsn, min_size=1, max_size=2)
    try:
        if tier == "shared":
            await admin.execute(f"ALTER POLICY tenant_isolation ON {table} USING ({OLD_POLICY}) WITH CHECK ({OLD_POLICY})")
        else:
            await admin.execute(f"DROP POLICY tenant_isolation ON {table}; ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")

        async def announce(_: object) -> None:
            return None

        ctx = StepContext(operation_id=uuid.uuid4(), tenant_id=uuid.UUID(tenant["id"]), params={}, catalog=catalog,
                          secret_key=stack.settings.secret_key, box=SecretBox(stack.settings.secret_key),
                          announce=announce, tenant_tree=stack.settings.tenant_tree)
        for step in tier_manager(tier).migrate:
            await step(ctx)
        qual = await admin.fetchval("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = $1::regclass "
                                    "AND polname = 'tenant_isolation'", table)
        assert qual is not None and "tp_guard.bound_tenant()" in qual
        assert await admin.fetchval("SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass", table)
    finally:
        await catalog.close()
        await admin.close()
