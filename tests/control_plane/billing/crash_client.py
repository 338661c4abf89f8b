"""A process that asks for a tenant's Stripe customer and is killed while Stripe's answer is on
its way (the test holds the answer at the fake server). Arguments: catalog DSN, API base, tenant id."""

import asyncio
import sys

from control_plane.billing.outbound import BillingCalls
from control_plane.billing.stripe_client import StripeGateway
from control_plane.catalog.db import create_engine, sessionmaker
from tests.control_plane.billing.conftest import API_KEY


async def main(dsn: str, api_base: str, tenant_id: str) -> None:
    engine = create_engine(dsn, pool_size=1)
    gateway = StripeGateway(API_KEY, api_base, max_network_retries=0)
    try:
        await BillingCalls(sessionmaker(engine), gateway).ensure_customer("crash-test", tenant_id)
    finally:
        await gateway.close()
        await engine.dispose()


asyncio.run(main(*sys.argv[1:4]))
