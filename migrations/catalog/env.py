"""Alembic environment (shared shape for the catalog and tenant trees): async engine, asyncpg."""

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from control_plane.catalog.models import Base

TARGET_METADATA = Base.metadata
config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=TARGET_METADATA,
                      compare_type=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


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
