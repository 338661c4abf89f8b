"""Alembic environment (shared shape for the catalog and tenant trees): async engine, asyncpg."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from contracts.locks import CATALOG_MIGRATION as _MIGRATION_LOCK  # two migrators take turns
from control_plane.catalog import reader
from control_plane.catalog.models import Base

TARGET_METADATA = Base.metadata
config = context.config


def _run(connection) -> None:
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=TARGET_METADATA,
                          compare_type=True, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        _regrant_readers(connection)
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
        connection.commit()


def _regrant_readers(connection) -> None:
    """The catalog readers' column grants again, for the columns the migrations added (reader.py):
    no `tenantctl catalog-reader` needed after an upgrade. In the migrations' lock, one transaction."""
    readers = [row[0] for row in connection.exec_driver_sql(reader.READERS_SQL).all()]
    if readers:
        existing = {(t, c) for t, c in connection.exec_driver_sql(reader.EXISTING_COLUMNS_SQL).all()}
        for statement in reader.regrant_sql(readers, existing):
            connection.exec_driver_sql(statement)
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
