"""What a handler holds as `db`: a proxy of the pooled TenantConnection that stops working when the
transaction ends, as asyncpg's own PoolConnectionProxy does. A handler (or a task it started) that
keeps `db` past its request would otherwise run statements in the next borrower's transaction,
which on a schema or shared pool is another tenant's.

Detaching also invalidates what asyncpg made through the connection meanwhile (prepared
statements, cursors: asyncpg checks its release counter) and our savepoints. A call costs one
attribute check; the proxy is the only object a borrow adds.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import asyncpg
from asyncpg.connection import _ConnectionProxy  # makes isinstance(proxy, asyncpg.Connection) hold

from tenant_router.connection import ConnectionReleased, TenantConnection


def _released(name: str) -> ConnectionReleased:
    return ConnectionReleased(f"cannot use Connection.{name}: the connection was released at the end of its "
                              "request's transaction (keep no `db` beyond the handler)")


def _forwarding(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def forward(self: "ConnectionProxy", *args: Any, **kwargs: Any) -> Any:
        con = self._con
        if con is None:
            raise _released(name)
        # looked up on the connection's class at call time, so overrides (and test patches) apply
        return getattr(con.__class__, name)(con, *args, **kwargs)

    functools.update_wrapper(forward, method)
    if inspect.iscoroutinefunction(method) and hasattr(inspect, "markcoroutinefunction"):
        inspect.markcoroutinefunction(forward)
    return forward


class ConnectionProxy(_ConnectionProxy):
    __slots__ = ("_con",)

    def __init__(self, con: TenantConnection) -> None:
        self._con: TenantConnection | None = con
        con._set_proxy(self)  # asyncpg hands the proxy, not the connection, to listener callbacks

    def __getattr__(self, name: str) -> Any:
        con = self._con
        if con is None:
            if name.startswith("__"):
                raise AttributeError(name)
            raise _released(name)
        return getattr(con, name)

    def detach(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con._set_proxy(None)
            con._pool_release_ctr += 1  # asyncpg's check for statements and cursors made meanwhile

    def __repr__(self) -> str:
        state = "released" if self._con is None else repr(self._con)
        return f"<ConnectionProxy {state} {id(self):#x}>"


for _name in dir(asyncpg.Connection):
    _method = getattr(asyncpg.Connection, _name)
    if not _name.startswith("_") and inspect.isfunction(_method):
        setattr(ConnectionProxy, _name, _forwarding(_name, _method))
del _name, _method
