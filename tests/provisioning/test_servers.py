"""The admin sessions a worker keeps between operations: reused, given back clean, replaced when
the server dropped them."""

from __future__ import annotations

import asyncpg

from provisioning.sealing import SecretBox
from provisioning.servers import AdminSessions, load_server
from tests.conftest import SECRET_KEY, Stack


async def test_admin_sessions_are_reused_clean_and_replaced_when_dropped(stack: Stack):
    catalog = await asyncpg.connect(stack.catalog_dsn)
    try:
        server_id = await catalog.fetchval("SELECT id FROM database_servers WHERE name = 'local'")
        server = await load_server(catalog, server_id)
    finally:
        await catalog.close()
    sessions = AdminSessions(SecretBox(SECRET_KEY), keep=1, check_after=0.0)
    try:
        first = await sessions.acquire(server)
        pid = first.get_server_pid()
        await first.execute("SELECT pg_advisory_lock(4242)")
        await sessions.release(server, first)
        again = await sessions.acquire(server)
        assert again.get_server_pid() == pid  # reused
        assert not await again.fetchval(  # its advisory locks went with the release
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid)
        second = await sessions.acquire(server)  # none idle: a new one
        assert second.get_server_pid() != pid
        await sessions.release(server, again)
        await sessions.release(server, second)  # beyond `keep`: closed
        assert second.is_closed()

        admin = await asyncpg.connect(stack.pg.dsn())
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        fresh = await sessions.acquire(server)  # the dropped one is noticed and replaced
        assert fresh.get_server_pid() != pid and await fresh.fetchval("SELECT 1") == 1
        await sessions.release(server, fresh)
    finally:
        await sessions.close()
