"""Alembic environment (shared shape for the catalog and tenant trees): async engine, asyncpg."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from contracts.guard import GUARD_SCHEMA
from migrations.runner import TENANT_MIGRATION_LOCK as _MIGRATION_LOCK  # two processes take turns

TARGET_METADATA = None
config = context.config


def _run(connection) -> None:
    # schema tier: the tenant's tables and its alembic_version live in its own schema
    schema = config.attributes.get("schema")
    lock = f"{_MIGRATION_LOCK}, hashtext('{schema or ''}')"  # one migrator per schema/database
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({lock})")
    if schema:
        from contracts.identifiers import quote

        connection.exec_driver_sql(f"SET search_path TO {quote(schema)}")
    connection.commit()
    try:
        checks = [_refuse_unguarded_shared_tables] if config.attributes.get("tier") == "shared" else []
        context.configure(connection=connection, target_metadata=TARGET_METADATA, compare_type=True,
                          transaction_per_migration=True, version_table_schema=schema, on_version_apply=checks)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock})")
        connection.commit()


# shared-tier tables (in the shared database's own schemas) that lack tenant_id or forced RLS; the
# guard's schema is left out: its key table is readable only by its NOLOGIN owner, never by tenants
_UNGUARDED = f"""
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{GUARD_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT (c.relrowsecurity AND c.relforcerowsecurity
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                       AND NOT a.attisdropped)
           AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))
ORDER BY 1
"""


class UnguardedSharedTable(RuntimeError):
    """A revision left a shared-tier table that any tenant could read: refused, rolled back."""


def _refuse_unguarded_shared_tables(ctx, step, heads, run_args) -> None:
    """After each revision on the shared tier, inside its transaction: every table must have
    `tenant_id` and forced row-level security with a policy, as create_tenant_table() makes them;
    otherwise the revision is rolled back with an error naming the tables."""
    names = [row[0] for row in ctx.connection.exec_driver_sql(_UNGUARDED)]
    if names:
        raise UnguardedSharedTable(
            f"revision {step.up_revision_id} leaves shared-tier tables without tenant_id and forced row-level "
            f"security: {', '.join(names)}; create tenant tables with migrations.tenant.tiers.create_tenant_table() "
            "(or add tenant_id and call enable_row_level_security())")


async def _main() -> None:
    engine = create_async_engine(config.attributes["url"], poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _render() -> None:
    """Offline mode (`runner.render_upgrade`): the revision range as one SQL script, without
    BEGIN/COMMIT (whoever applies it wraps it in its own transaction) and without the migration
    lock (the applier takes it)."""
    context.configure(url=config.attributes.get("url", "postgresql://"), dialect_name="postgresql",
                      literal_binds=True, transactional_ddl=False, target_metadata=TARGET_METADATA,
                      version_table_schema=config.attributes.get("schema"))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _render()
else:
    asyncio.run(_main())
