"""Every advisory-lock key we take, in one place, so no two purposes can share one by accident.

Single-key locks take a bigint; two-key locks take (class, hashtext(name)) with an int4 class.
"""

from __future__ import annotations

# single key (bigint)
CATALOG_MIGRATION = 0x7470_6D69_6772  # "tpmigr": one catalog migrator at a time
SPARE_REFILL = 0x7470_7370_6172  # "tpspar": one spare refiller per server (taken on that server)
TEMPLATE = 0x7470_7465_6D70  # "tptemp": template upgrades (exclusive) against copies (shared)

# two-key classes (int4), the second key hashtext() of what is locked
OPERATION = 0x7470  # "tp": a worker's claim of an operation (hashtext(operation id))
RECONCILER = 0x7470 + 1  # one scheduled reconciler at a time (second key 0)
FLEET_RUN = 0x7470 + 2  # one coordinator per fleet migration run (hashtext(run id))
LOGIN_WATCH = 0x7470 + 3  # one watcher of the shared login roles at a time (second key 0)
BILLING_APPLIER = 0x7470 + 4  # one billing event applied at a time, fleet-wide (second key 0)
ANNOUNCEMENT_OUTBOX = 0x7470 + 5  # one deliverer of the announcement outbox at a time, in order (second key 0)
TENANT_TREE = 0x7470 + 6  # one process at a time compares and records the tenant tree (second key 0)
TENANT_MIGRATION = 0x7470_6D69  # "tpmi": one migrator per tenant database or schema
GRANTS = 0x7470_6772  # "tpgr": grants on a shared object, one granter at a time
