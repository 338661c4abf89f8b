"""Dump and restore per tier (base.TierManager.dump, .restore): the database, the schema, the rows.

A restore never writes into the copy that serves the tenant:
- dedicated: the backup goes into a new database, `tp_rs_<id>`, hardened like a fresh tenant's;
  the swap renames the tenant's database to `tp_ro_<id>` and the new one to `tp_db_<id>` in one
  transaction, and the old one is dropped after the placement switched.
- schema: `pg_dump -n` restores under the schema's own name, so the tenant's schema is renamed to
  `tp_so_<id>` first (reads fail until the restore commits; writes are paused anyway) and put back
  by `discard` if the restore fails; the old schema is dropped after the switch.
- shared: the tenant's rows are deleted and the archive loaded in one transaction, checked against
  the manifest before it commits; a failure leaves the rows as they were.
pg_restore logs in as the operation's unprivileged restore role (steps/restore_roles.py), never
as the admin: an archive is code. The hardening hands what it made to the admin, the owner a fresh
tenant's objects have, and drops the role.
Names derive from tenant ids (validated by contracts.identifiers), so a rerun finds what an earlier
attempt made and the reconciler sees the prefixes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from contracts.identifiers import SCHEMA_GATEWAY_ROLE, SCHEMAS_DATABASE, SHARED_DATABASE, quote, validate
from provisioning import probes
from provisioning.backups import dump as dumps
from provisioning.backups import manifest as manifests
from provisioning.backups import shared_archive
from provisioning.backups.crypto import PAYLOAD_PG_DUMP, PAYLOAD_SHARED_ARCHIVE
from provisioning.backups.manifest import Manifest
from provisioning.context import StepContext
from provisioning.servers import admin_connection
from provisioning.steps import grants, guard, restore_roles
from provisioning.tiers.base import Dump, Step

_SWAP_TRIES = 20  # a rename waits for sessions to the old database to end (they are terminated)


def staging_database(tenant_id: uuid.UUID | str) -> str:
    return validate("tp_rs_" + uuid.UUID(str(tenant_id)).hex)


def old_database(tenant_id: uuid.UUID | str) -> str:
    return validate("tp_ro_" + uuid.UUID(str(tenant_id)).hex)


def old_schema(tenant_id: uuid.UUID | str) -> str:
    return validate("tp_so_" + uuid.UUID(str(tenant_id)).hex)


async def _checked_dsn(side: StepContext, database: str) -> str:
    dsn = (await side.server()).dsn(side.box, database)
    await dumps.check_client(dumps.find_binaries(), dsn)  # pg_dump at least the server's major
    return dsn


# -- dumps -------------------------------------------------------------------------------------------
@asynccontextmanager
async def dump_database(side: StepContext, database: str, schema: str, tier: str) -> AsyncIterator[Dump]:
    """pg_dump -Fc (of `schema` alone, unless it is the dedicated database's public) in the snapshot
    the manifest is taken in: the counts describe exactly what the dump holds."""
    dsn = await _checked_dsn(side, database)
    async with admin_connection(await side.server(), side.box, database) as conn, \
            dumps.exported_snapshot(conn) as snapshot:
        recorded = await manifests.take(conn, tier=tier, schema=schema, tenant_id=side.tenant_id)
        yield Dump(PAYLOAD_PG_DUMP, dumps.dump(dsn, schema=None if schema == "public" else schema,
                                               snapshot=snapshot), recorded)


@asynccontextmanager
async def dump_rows(side: StepContext) -> AsyncIterator[Dump]:
    """The shared tier: the tenant's rows as an archive (its own snapshot and manifest inside)."""
    async with admin_connection(await side.server(), side.box, SHARED_DATABASE) as conn:
        found = Dump(PAYLOAD_SHARED_ARCHIVE, None, None)  # type: ignore[arg-type]

        async def chunks() -> AsyncIterator[bytes]:
            first = True
            async for chunk in shared_archive.write_archive(conn, side.tenant_id):
                if first:
                    found.manifest, first = shared_archive.manifest_in(chunk), False
                yield chunk

        found.chunks = chunks()
        yield found


# -- dedicated ---------------------------------------------------------------------------------------
class DedicatedRestore:
    async def load(self, side: StepContext, chunks: AsyncIterator[bytes], recorded: Manifest) -> None:
        """A fresh staging database each time (a half-restored one from a crash is dropped), closed
        to PUBLIC before anything is in it; pg_restore in one transaction."""
        staging = staging_database(side.tenant_id)
        conn = await side.admin()
        await conn.execute(f"DROP DATABASE IF EXISTS {quote(staging)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {quote(staging)} TEMPLATE template0")
        await conn.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote(staging)} FROM PUBLIC")
        await restore_roles.load_dump(side, staging, chunks, in_public=True)

    async def harden(self, side: StepContext) -> None:
        """What harden_database gives a new tenant, on the staging database, once what the restore
        role loaded is the admin's and the role is gone."""
        server, staging, role = await side.server(), quote(staging_database(side.tenant_id)), quote(side.role)
        await restore_roles.drop_restore_role(side, staging_database(side.tenant_id), keep_objects=True)
        await (await side.admin()).execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {staging} FROM PUBLIC;"
                                           f"GRANT CONNECT, TEMPORARY ON DATABASE {staging} TO {role}")
        async with admin_connection(server, side.box, staging_database(side.tenant_id)) as conn:
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC;" + _public_revoked("public")
                               + grants.row_access("public", side.role, server.admin_user))

    async def compare(self, side: StepContext, recorded: Manifest) -> list[str]:
        database = side.database if await self._swapped(side) else staging_database(side.tenant_id)
        async with admin_connection(await side.server(), side.box, database) as conn:
            return await manifests.differences(recorded, conn, "public", None)

    async def _swapped(self, side: StepContext) -> bool:
        conn = await side.admin()
        return (await probes.database_exists(conn, old_database(side.tenant_id))
                and not await probes.database_exists(conn, staging_database(side.tenant_id)))

    async def swap(self, side: StepContext) -> None:
        """tp_db -> tp_ro and tp_rs -> tp_db in one transaction; sessions to the tenant's database
        (the router's, reading meanwhile) are ended first, and new ones refused until the rename."""
        if await self._swapped(side):
            return
        conn = await side.admin()
        current, staging, old = side.database, staging_database(side.tenant_id), old_database(side.tenant_id)
        await conn.execute(f"ALTER DATABASE {quote(current)} ALLOW_CONNECTIONS false")
        for attempt in range(_SWAP_TRIES):
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = $1 AND pid <> pg_backend_pid()", current)
            try:
                async with conn.transaction():
                    await conn.execute(f"ALTER DATABASE {quote(current)} RENAME TO {quote(old)}")
                    await conn.execute(f"ALTER DATABASE {quote(staging)} RENAME TO {quote(current)}")
                return
            except asyncpg.ObjectInUseError:
                if attempt == _SWAP_TRIES - 1:
                    raise
                await asyncio.sleep(0.1)

    async def drop_old(self, side: StepContext) -> None:
        await (await side.admin()).execute(f"DROP DATABASE IF EXISTS {quote(old_database(side.tenant_id))} WITH (FORCE)")

    async def discard(self, side: StepContext) -> None:
        conn = await side.admin()
        await restore_roles.drop_restore_role(side, staging_database(side.tenant_id), keep_objects=False)
        if await self._swapped(side):
            return  # the restored copy serves the tenant already
        await conn.execute(f"DROP DATABASE IF EXISTS {quote(staging_database(side.tenant_id))} WITH (FORCE)")
        if await probes.database_exists(conn, side.database):  # a swap that stopped half-way
            await conn.execute(f"ALTER DATABASE {quote(side.database)} ALLOW_CONNECTIONS true")


# -- schema -------------------------------------------------------------------------------------------
class SchemaRestore:
    async def load(self, side: StepContext, chunks: AsyncIterator[bytes], recorded: Manifest) -> None:
        schema, old = side.schema, old_schema(side.tenant_id)
        await restore_roles.drop_restore_role(side, SCHEMAS_DATABASE, keep_objects=False)  # a killed attempt's
        async with admin_connection(await side.server(), side.box, SCHEMAS_DATABASE) as conn:
            has_old, has_current = await _schemas_exist(conn, old, schema)
            if has_old and has_current:
                await conn.execute(f"DROP SCHEMA {quote(schema)} CASCADE")  # an earlier attempt's
            elif has_current:
                await conn.execute(f"ALTER SCHEMA {quote(schema)} RENAME TO {quote(old)}")
        await restore_roles.load_dump(side, SCHEMAS_DATABASE, chunks, in_public=False)

    async def harden(self, side: StepContext) -> None:
        """What create_schema and grant_schema_privileges give a new tenant's schema, the guard's
        policies included (a backup taken before the guard existed has none), once what the
        restore role loaded is the admin's and the role is gone. An archive that made schemas
        besides the tenant's is refused (the undo drops them with the role)."""
        server = await side.server()
        async with admin_connection(server, side.box, SCHEMAS_DATABASE) as conn:
            if others := await restore_roles.schemas_made_besides(conn, side, side.schema):
                raise RuntimeError(f"the backup made schemas besides the tenant's: {', '.join(others)}")
        await restore_roles.drop_restore_role(side, SCHEMAS_DATABASE, keep_objects=True)
        async with admin_connection(server, side.box, SCHEMAS_DATABASE) as conn:
            await guard.install_guard(conn, side.secret_key, server.admin_user)
            await guard.protect_schema_tables(conn, side.schema, str(side.tenant_id))
            await conn.execute(f"REVOKE ALL ON SCHEMA {quote(side.schema)} FROM PUBLIC;"
                               + _public_revoked(side.schema)
                               + f"GRANT USAGE ON SCHEMA {quote(side.schema)} TO {quote(side.role)};"
                               + grants.row_access(side.schema, side.role, server.admin_user)
                               + f";GRANT {quote(side.role)} TO {quote(SCHEMA_GATEWAY_ROLE)}")

    async def compare(self, side: StepContext, recorded: Manifest) -> list[str]:
        async with admin_connection(await side.server(), side.box, SCHEMAS_DATABASE) as conn:
            return await manifests.differences(recorded, conn, side.schema, None)

    async def swap(self, side: StepContext) -> None:
        """Nothing to rename: the restored schema has the tenant's name already."""

    async def drop_old(self, side: StepContext) -> None:
        async with admin_connection(await side.server(), side.box, SCHEMAS_DATABASE) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote(old_schema(side.tenant_id))} CASCADE")

    async def discard(self, side: StepContext) -> None:
        """The tenant's schema back as it was before the restore started."""
        schema, old = side.schema, old_schema(side.tenant_id)
        await restore_roles.drop_restore_role(side, SCHEMAS_DATABASE, keep_objects=False)
        async with admin_connection(await side.server(), side.box, SCHEMAS_DATABASE) as conn, conn.transaction():
            has_old, _ = await _schemas_exist(conn, old, schema)
            if has_old:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
                await conn.execute(f"ALTER SCHEMA {quote(old)} RENAME TO {quote(schema)}")


def _public_revoked(schema: str) -> str:
    """An archive's own GRANTs to PUBLIC on what it made (the restore role owned it) taken back."""
    return (f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM PUBLIC;"
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM PUBLIC;")


async def _schemas_exist(conn: asyncpg.Connection, *names: str) -> tuple[bool, ...]:
    found = {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)",
                                                    list(names))}
    return tuple(n in found for n in names)


# -- shared -------------------------------------------------------------------------------------------
class SharedRestore:
    def __init__(self, harden: Step) -> None:
        self._harden = harden  # the tier's grant step (shared.py imports this module, not the reverse)

    async def load(self, side: StepContext, chunks: AsyncIterator[bytes], recorded: Manifest) -> None:
        """The tenant's rows replaced in one transaction: deleted (children first, each attempt in a
        savepoint since foreign keys decide the order), then the archive loaded and proved."""
        async with admin_connection(await side.server(), side.box, SHARED_DATABASE) as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(side.tenant_id))
            remaining = [t.name for t in recorded.tables]
            for _ in range(len(remaining) + 1):
                blocked = []
                for table in remaining:
                    try:
                        async with conn.transaction():
                            await conn.execute(f"DELETE FROM public.{quote(table)} WHERE tenant_id = $1",
                                               side.tenant_id)
                    except asyncpg.ForeignKeyViolationError:
                        blocked.append(table)
                remaining = blocked
                if not remaining:
                    break
            if remaining:
                raise RuntimeError(f"rows of tables {remaining} could not be deleted (foreign keys)")
            await shared_archive.load_archive(chunks, conn, tenant_id=side.tenant_id)

    async def harden(self, side: StepContext) -> None:
        await self._harden(side)

    async def compare(self, side: StepContext, recorded: Manifest) -> list[str]:
        async with admin_connection(await side.server(), side.box, SHARED_DATABASE) as conn:
            await conn.execute("SELECT set_config('app.tenant_id', $1, false)", str(side.tenant_id))
            return await manifests.differences(recorded, conn, "public", side.tenant_id)

    async def swap(self, side: StepContext) -> None:
        """The rows were replaced when the load committed."""

    async def drop_old(self, side: StepContext) -> None:
        """The old rows went in the load's transaction."""

    async def discard(self, side: StepContext) -> None:
        """A load that failed rolled back: nothing to undo."""
