"""A background job as a tenant: count each tenant's projects, or fix one tenant's data.

    CATALOG_DATABASE_URL=... SECRET_KEY=... python -m examples.job              # every active tenant
    CATALOG_DATABASE_URL=... SECRET_KEY=... python -m examples.job acme         # one tenant (slug or id)
    tenantctl each -- python -m examples.job                                    # one process per tenant
"""

from __future__ import annotations

import asyncio
import os
import sys

from tenant_router.jobs import for_each_tenant, tenant_context


async def count_projects(db, tenant) -> int:
    return await db.fetchval("SELECT count(*) FROM projects")


async def main(argv: list[str]) -> int:
    one = argv[0] if argv else os.environ.get("TENANT_ID")  # tenantctl each sets TENANT_ID
    if one:
        async with tenant_context(one) as db:  # a suspended tenant refuses (include_suspended=True to allow)
            print(one, await db.fetchval("SELECT count(*) FROM projects"))
        return 0
    report = await for_each_tenant(count_projects, per_server=4)
    for outcome in report:
        print(outcome.slug, outcome.result if outcome.ok else f"failed: {outcome.error}")
    return 0 if all(o.ok for o in report) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
