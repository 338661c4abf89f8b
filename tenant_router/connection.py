"""TenantConnection: a pooled tenant connection, and the statements a routed transaction costs.

A routed transaction is three round trips, whatever the tier (see binding.py): `BEGIN` with the
tier's binding in one message (`begin_bound()`), the handler's statements, then `COMMIT` with the
whole session reset (RESET_SQL) in one message (`commit_and_reset()`), plus a DEALLOCATE only when
the borrower left SQL-level prepared statements. On a small machine each round trip costs about as
much as the statements. When the COMMIT fails, the pool's release resets the connection instead.

Inside a routed transaction `conn.transaction()` is a savepoint, so handlers keep writing
`async with conn.transaction():` for a block that may fail on its own.
"""

from __future__ import annotations

import asyncio
import itertools
from types import TracebackType
from typing import Any

import asyncpg

from contracts.identifiers import quote_literal

# One message. RESET ALL leaves the role alone, hence RESET ROLE and SET SESSION AUTHORIZATION
# DEFAULT. Its last statement (statements_check()) reports, in its command tag ("SELECT n"), whether
# the borrower left SQL-level prepared statements (PREPARE) or took asyncpg's own away (a COMMIT
# then DISCARD ALL or DEALLOCATE ALL: the next borrower, maybe another tenant, would fail on the
# statement cache). Only then is DEALLOCATE ALL sent as well, and asyncpg's cache dropped with it:
# rare, so simpler than sorting statements (and a DO block is compiled on every run).
RESET_SQL = """
SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ROLE; SET SESSION AUTHORIZATION DEFAULT;
RESET ALL; DISCARD TEMP; DISCARD SEQUENCES;
"""
NOTHING_PREPARED = "SELECT 0"
DEALLOCATE_SQL = "DEALLOCATE ALL"
PREPARED_VIEW = "pg_catalog.pg_prepared_statements"
# Where tenants share a login role (schema, shared), pg_prepared_statements is closed to it: it
# lists the text of what asyncpg cached for earlier borrowers, other tenants. The guard's
# prepared_statements() gives names and from_sql only (contracts/guard.py).
GUARDED_PREPARED_VIEW = "tp_guard.prepared_statements()"


def statements_check(view: str, cached: list[str]) -> str:
    """Rows when a statement was PREPAREd or one of asyncpg's `cached` names is gone. The names are
    asyncpg's own (__asyncpg_stmt_N__), quoted as literals all the same."""
    check = f"SELECT 1 FROM {view} s WHERE s.from_sql"
    if cached:
        names = ", ".join(quote_literal(n) for n in cached)
        check += f" UNION ALL SELECT 1 FROM unnest(ARRAY[{names}]::text[]) n WHERE n NOT IN (SELECT name FROM {view})"
    return check + ";"


_savepoint_ids = itertools.count(1)


class ConnectionReleased(asyncpg.InterfaceError):
    """A connection (or a savepoint of it) used after the transaction it was handed out for."""


class Savepoint:
    """`async with conn.transaction():` inside a routed transaction: SAVEPOINT, then RELEASE, or
    ROLLBACK TO when the block raises (the routed transaction goes on either way). Like asyncpg's
    own transactions, it refuses to run once the connection was released (a kept savepoint would
    act in the next borrower's transaction)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._release_ctr = conn._pool_release_ctr
        self._name = f"tp_savepoint_{next(_savepoint_ids)}"
        self._open = False

    async def _execute(self, sql: str) -> None:
        if self._conn._pool_release_ctr != self._release_ctr:
            raise ConnectionReleased("cannot use a savepoint after its connection was released")
        await self._conn.execute(sql)

    async def start(self) -> None:
        await self._execute(f"SAVEPOINT {self._name}")
        self._open = True

    async def commit(self) -> None:
        if self._open:
            self._open = False
            await self._execute(f"RELEASE SAVEPOINT {self._name}")

    async def rollback(self) -> None:
        if self._open:
            self._open = False
            await self._execute(f"ROLLBACK TO SAVEPOINT {self._name}; RELEASE SAVEPOINT {self._name}")

    async def __aenter__(self) -> "Savepoint":
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()


class TenantConnection(asyncpg.Connection):
    """A `connection_class` for asyncpg: `reset()` keeps asyncpg's part (roll back an open
    transaction, drop the notification and log listeners a borrower added) and sends our reset
    instead of asyncpg's reset query; it drops query loggers too, so nothing a borrower attached
    hears the next borrower."""

    borrowed_from: Any = None  # (pool, tenant slots) while lent (PoolRegistry.borrow / give_back)
    _prepared_view = PREPARED_VIEW
    _routed = False  # inside begin_bound() ... commit_and_reset()
    _reset_sent = False  # the reset went out with the COMMIT: release has nothing to send
    _callbacks_added = False  # a borrower added a listener or logger: reset() must drop it

    def add_listener(self, *args, **kwargs):  # type: ignore[override]
        self._callbacks_added = True
        return super().add_listener(*args, **kwargs)

    def add_log_listener(self, *args, **kwargs):  # type: ignore[override]
        self._callbacks_added = True
        return super().add_log_listener(*args, **kwargs)

    def add_query_logger(self, *args, **kwargs):  # type: ignore[override]
        self._callbacks_added = True
        return super().add_query_logger(*args, **kwargs)

    @property
    def clean(self) -> bool:
        """Nothing left to do at release: the reset went with the COMMIT, no transaction is open
        and no borrower's callback is attached."""
        return self._reset_sent and not self._callbacks_added and not self.is_in_transaction()

    async def begin_bound(self, binding: str | None) -> None:
        await self.execute("BEGIN;" + binding if binding else "BEGIN")
        self._routed = True

    async def commit_and_reset(self) -> None:
        self._routed = False
        await self._finish_reset(await self.execute("COMMIT;" + self.reset_sql()))
        self._reset_sent = True

    def reset_sql(self) -> str:
        cached = [stmt.name for stmt in self._stmt_cache.iter_statements() if stmt.name and not stmt.closed]
        return RESET_SQL + statements_check(self._prepared_view, cached)

    async def _finish_reset(self, status: str) -> None:
        if status != NOTHING_PREPARED:
            await self.execute(DEALLOCATE_SQL)
            self._drop_local_statement_cache()

    async def rollback_routed(self) -> None:
        self._routed = False
        await self.execute("ROLLBACK")

    def transaction(self, *, isolation: str | None = None, readonly: bool = False,
                    deferrable: bool = False):  # type: ignore[override]
        if not self._routed:
            return super().transaction(isolation=isolation, readonly=readonly, deferrable=deferrable)
        if isolation is not None or readonly or deferrable:
            raise asyncpg.InterfaceError("a block inside the tenant's transaction is a savepoint: it cannot "
                                         "choose its own isolation level, read-only or deferrable mode")
        return Savepoint(self)

    # asyncpg's "global" caches are those of the pool behind a proxy; this connection's pool keeps none
    def _drop_global_statement_cache(self) -> None:
        self._drop_local_statement_cache()

    def _drop_global_type_cache(self) -> None:
        self._drop_local_type_cache()

    def get_reset_query(self) -> str:
        return ""  # asyncpg's reset() then only rolls back and drops callbacks; ours follows

    async def reset(self, *, timeout: float | None = None) -> None:
        loggers = getattr(self, "_query_loggers", None)
        if loggers is not None:
            loggers.clear()
        try:
            async with asyncio.timeout(timeout):
                await super().reset()
                if not self._reset_sent:
                    await self._finish_reset(await self.execute(self.reset_sql()))
        finally:
            self._reset_sent = False
            self._routed = False
            self._callbacks_added = False

    def lend(self) -> None:
        """Handed to a borrower: whatever it does from now on is its own to undo."""
        self._reset_sent = False


class GuardedConnection(TenantConnection):
    """A connection of a login role many tenants share: the same, but its reset asks the guard
    about prepared statements instead of reading pg_prepared_statements."""

    _prepared_view = GUARDED_PREPARED_VIEW
