"""Per-tenant backups: where objects are stored (store.py), the tenants' data keys (keys.py), the
encrypted object format (crypto.py), pg_dump/pg_restore (dump.py) and the shared tier's archive of
one tenant's rows (shared_archive.py). Nothing here knows about operations or pipelines: the backup
and restore steps are built on these."""
