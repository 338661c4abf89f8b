"""Alembic environment (shared shape for the catalog and tenant trees): async engine, asyncpg."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

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
        context.configure(connection=connection, target_metadata=TARGET_METADATA, compare_type=True,
                          transaction_per_migration=True, version_table_schema=schema)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({lock})")
        connection.commit()


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
