"""A process that applies the recorded Stripe events of a catalog and is killed while one is being
applied (the test holds the tenant's row, so the apply waits inside its transaction).
Argument: the catalog DSN."""

import asyncio
import sys

from control_plane.billing.service import BillingEvents
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.settings import Settings
from tests.conftest import SECRET_KEY


async def main(dsn: str) -> None:
    engine = create_engine(dsn, pool_size=1)
    try:
        settings = Settings.from_env({}, catalog_database_url=dsn, secret_key=SECRET_KEY)
        while await BillingEvents(sessionmaker(engine), settings).apply_next() is not None:
            pass
    finally:
        await engine.dispose()


asyncio.run(main(sys.argv[1]))
