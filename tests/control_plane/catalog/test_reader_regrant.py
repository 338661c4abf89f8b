"""A catalog migration that adds a column routing reads leaves the catalog reader able to read it:
the catalog's env.py re-applies the readers' table grants after every upgrade, no `tenantctl
catalog-reader` run needed, and the reader's password and read-only default are untouched."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from control_plane.catalog.reader import READABLE, ensure_reader
from migrations import runner
from provisioning import scram
from tests.conftest import fresh_catalog


async def test_an_upgrade_adding_a_readable_column_regrants_the_reader(pg):
    dsn = await fresh_catalog(pg, "catalog_reader_regrant")
    role, password = f"tp_reader_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    # 0005: before tenants.billing_grace_until (0006), a column READABLE names
    await runner.downgrade("catalog", dsn, "0005")
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_reader(conn, role, scram.verifier(password))  # grants what exists at 0005
    finally:
        await conn.close()
    reader_dsn = _as(dsn, role, password)

    await runner.upgrade("catalog", dsn)  # adds the column; no catalog-reader run after it

    reader = await asyncpg.connect(reader_dsn)  # the same password still logs in
    try:
        for table, columns in READABLE.items():
            await reader.fetch(f"SELECT {', '.join(columns)} FROM {table} LIMIT 1")  # every column routing reads
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("SELECT name FROM tenants")  # and still nothing else
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("SELECT * FROM tenant_kms_keys")  # a table made after the reader
        assert await reader.fetchval("SHOW default_transaction_read_only") == "on"
    finally:
        await reader.close()
        admin = await asyncpg.connect(pg.dsn())
        try:
            await admin.execute('DROP DATABASE IF EXISTS "catalog_reader_regrant" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()


def _as(dsn: str, role: str, password: str) -> str:
    """`dsn` with the reader's login instead of its own."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}:{password}@{rest.split('@', 1)[-1]}"
