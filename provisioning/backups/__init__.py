"""Per-tenant backups: where objects are stored (store.py: S3, the only boto3
importer, and open_store(); file_store.py; objects.py), the tenants'
data keys (keys.py), the encrypted object format (crypto.py), pg_dump/pg_restore (dump.py), the
manifest of counts and checksums taken at dump time (manifest.py), the shared tier's archive of one
tenant's rows (shared_archive.py), and the bounded thread bridges they share (streams.py). Nothing
here knows about operations or pipelines: the backup and restore steps are to be built on these."""
