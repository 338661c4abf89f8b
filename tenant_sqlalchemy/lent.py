"""What SQLAlchemy's asyncpg adapter is given as its driver connection: a thin wrapper over the
router's connection (its ConnectionProxy) that keeps what is worth keeping across sessions.

- Prepared statements: every session gets a new adapter (the router lends a connection per
  transaction), so the adapter's own statement cache would start empty each time and prepare
  every statement again, a round trip each. `prepare()` uses asyncpg's statement cache of the
  pooled connection instead (the cache raw asyncpg calls use too); the statement object it returns
  is bound to this borrow (asyncpg refuses it once the connection is released), the prepared
  state underneath stays with the connection. The engine turns the adapter's cache off.
- Schema changes: a statement prepared before a schema change may fail ("cached plan must not
  change result type") or decode with outdated types. The pooled connection remembers the
  dialect's invalidation time (moved by DDL run through SQLAlchemy and by such a failure) and the
  tenant revision its statements were prepared under; when either moved on, asyncpg's caches of
  that connection are dropped and statements are prepared afresh.
- The session's savepoint (SessionSavepoint): taken only before the session's first statement
  that may write, never released by a message of its own.
- json/jsonb: the statements it returns decode their json columns (json_rows.py), so the pooled
  connection keeps asyncpg's own codecs for its raw borrowers.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from tenant_router.connection import ConnectionReleased
from tenant_sqlalchemy.json_rows import decoding_json

_STATE = "_tp_sqlalchemy"  # a LentState on the router's pooled connection
_savepoint_ids = itertools.count(1)


@dataclass
class LentState:
    """What one pooled connection keeps for the sessions it serves."""

    schema_asof: float = 0.0  # the dialect invalidation time the cached statements postdate
    revision: str | None = None  # the tenant revision they were prepared under
    # the borrow (asyncpg's release counter) in which a committed session savepoint was left unreleased
    unreleased_in: int = -1


def state_of(pooled: Any) -> LentState:
    state = getattr(pooled, _STATE, None)
    if state is None:
        state = LentState()
        setattr(pooled, _STATE, state)
    return state


class SessionSavepoint:
    """The session's transaction inside the routed one (SQLAlchemy calls start, commit, rollback).

    `start()` sends nothing: the SAVEPOINT goes out just before the session's first statement that
    may write (LentConnection.before_statement), so a session that only reads costs no savepoint.
    The first `commit()` in a routed transaction sends nothing either: the routed COMMIT releases
    every savepoint in it, and an unreleased savepoint changes nothing for the statements after it.
    Later commits in the same routed transaction send their RELEASE, so a job that commits many
    times nests one savepoint at most. `rollback()` rolls back to the savepoint when one was taken
    (reads before it changed nothing to undo)."""

    def __init__(self, conn: LentConnection) -> None:
        self._conn = conn
        self._name = f"tp_session_{next(_savepoint_ids)}"
        self.taken = False
        self.open = False

    async def start(self) -> None:
        self.open = True

    async def take(self) -> None:
        await self._conn.lent.execute(f"SAVEPOINT {self._name}")
        self.taken = True

    async def commit(self) -> None:
        taken = self.taken
        self._end()
        if taken:
            state, borrow = self._conn.state, self._conn.pooled._pool_release_ctr
            if state.unreleased_in == borrow:
                await self._conn.lent.execute(f"RELEASE SAVEPOINT {self._name}")
            else:
                state.unreleased_in = borrow

    async def rollback(self) -> None:
        taken = self.taken
        self._end()
        if taken:
            await self._conn.lent.execute(f"ROLLBACK TO SAVEPOINT {self._name}; RELEASE SAVEPOINT {self._name}")

    def _end(self) -> None:
        self.open = self.taken = False
        if self._conn.savepoint is self:
            self._conn.savepoint = None


class LentConnection:
    """The adapter's driver connection: `lent` is the router's ConnectionProxy (it stops working
    when the routed transaction ends); everything not defined here is the proxy's."""

    def __init__(self, lent: asyncpg.Connection, dialect: Any, revision: str | None) -> None:
        self.lent = lent
        self.pooled = getattr(lent, "_con", None) or lent  # the TenantConnection behind the proxy
        self.state = state_of(self.pooled)
        self._dialect = dialect
        self._revision = revision
        self.savepoint: SessionSavepoint | None = None
        self.writes_next = True  # set per statement by LentExecutionContext.pre_exec

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lent, name)

    async def _check_schema(self) -> None:
        state = self.state
        asof = self._dialect._invalidate_schema_cache_asof
        stale = asof > state.schema_asof
        if self._revision is not None:
            stale = stale or (state.revision is not None and state.revision != self._revision)
        if stale:
            await self.pooled.reload_schema_state()  # drops the connection's statement and type caches
        state.schema_asof = max(state.schema_asof, asof)
        if self._revision is not None:
            state.revision = self._revision

    async def before_statement(self, writes: bool) -> None:
        if self.lent is not self.pooled and self.lent._con is None:
            raise ConnectionReleased("the session's connection was released with its transaction")
        await self._check_schema()
        savepoint = self.savepoint
        if writes and savepoint is not None and savepoint.open and not savepoint.taken:
            await savepoint.take()

    async def prepare(self, query: str, *, name: str | None = None) -> Any:
        await self.before_statement(self.writes_next)
        # use_cache: the pooled connection's statement cache (asyncpg names and keeps the statement)
        statement = await self.pooled._prepare(query, use_cache=True)
        return decoding_json(statement, self._dialect._json_deserializer or json.loads)

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> Any:
        await self.before_statement(True)
        return await self.lent.executemany(command, args, timeout=timeout)

    async def reload_schema_state(self) -> None:
        await self.pooled.reload_schema_state()

    def transaction(self, *, isolation: str | None = None, readonly: bool = False,
                    deferrable: bool = False) -> Any:
        if isolation is not None or readonly or deferrable:
            raise asyncpg.InterfaceError("a session inside the tenant's transaction is a savepoint: it cannot "
                                         "choose its own isolation level, read-only or deferrable mode")
        if not self.pooled.is_in_transaction():  # a connection of no routed transaction: a real one
            return self.lent.transaction()
        self.savepoint = SessionSavepoint(self)
        return self.savepoint
