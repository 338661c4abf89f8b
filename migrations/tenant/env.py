"""Alembic environment (shared shape for the catalog and tenant trees): async engine, asyncpg."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

TARGET_METADATA = None
config = context.config


# Two processes migrating the same database at once take turns on this session lock.
_MIGRATION_LOCK = 0x7470_6D69  # "tpmi" (int4: the two-key form)


def _run(connection) -> None:
    # schema tier: the tenant's tables and its alembic_version live in its own schema
    schema = config.attributes.get("schema")
    lock = f"{_MIGRATION_LOCK}, hashtext('{schema or ''}')"  # one migrator per schema/database
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({lock})")
    if schema:
        from provisioning.identifiers import quote

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


if context.is_offline_mode():
    raise SystemExit("offline mode is not supported")
asyncio.run(_main())
