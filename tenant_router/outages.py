"""Which errors mean "the database cannot be reached now" rather than "this statement is wrong":
the first are answered 503 with Retry-After (the caller may try again), the second are bugs (500).
Shared by the control plane (whose every query goes to the catalog) and the router's lookups."""

from __future__ import annotations

import asyncpg

_UNREACHABLE = (
    OSError,  # refused, reset, no route (ConnectionError and socket errors are OSErrors)
    TimeoutError,  # a connect or a statement that ran out of its bound (a black-holed server)
    asyncpg.ConnectionDoesNotExistError,  # the connection was lost mid-statement
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def unreachable(exc: BaseException) -> bool:
    """True when `exc`, or what it wraps (SQLAlchemy keeps the driver's error in `orig` and as the
    cause), says the server cannot be reached."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        if isinstance(current, _UNREACHABLE) or getattr(current, "connection_invalidated", False):
            return True
        if type(current).__name__ == "TimeoutError" and type(current).__module__.startswith("sqlalchemy"):
            return True  # no pooled connection came free in time
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
        seen += 1
    return False
