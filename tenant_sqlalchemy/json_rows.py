"""json and jsonb values decoded for SQLAlchemy's rows, not by codecs on the pooled connection.

SQLAlchemy's asyncpg dialect installs json/jsonb codecs on every connection it opens, so its rows
hold decoded values. Here that connection is the router's pooled one: codecs set on it would stay
for the raw asyncpg borrowers after the session (they would get decoded json where asyncpg gives
text), and swapping them per session drops the connection's statement cache (asyncpg binds codecs
into its prepared statements). So the pooled connection keeps asyncpg's codecs (json as text) and
the statements a session runs decode their json columns here, the way SQLAlchemy's codecs would:
the ORM, Core and text() see the same values as on a plain SQLAlchemy engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

JSON_OIDS = frozenset({114, 3802})  # json, jsonb
JSON_ARRAY_OIDS = frozenset({199, 3807})  # json[], jsonb[] (RowDescription names a domain's base type)

Loads = Callable[[str], Any]


def json_columns(attributes: Sequence[Any]) -> tuple[tuple[int, bool], ...]:
    """(index, is an array) of the result columns holding json or jsonb."""
    return tuple((i, attr.type.oid in JSON_ARRAY_OIDS) for i, attr in enumerate(attributes)
                 if attr.type.oid in JSON_OIDS or attr.type.oid in JSON_ARRAY_OIDS)


def _decode_array(value: Any, loads: Loads) -> Any:
    if isinstance(value, list):  # a dimension of a multidimensional array
        return [_decode_array(item, loads) for item in value]
    return None if value is None else loads(value)


class JsonRowDecoder:
    def __init__(self, columns: tuple[tuple[int, bool], ...], loads: Loads) -> None:
        self._columns = columns
        self._loads = loads

    def rows(self, records: Sequence[Any]) -> list[tuple[Any, ...]]:
        loads = self._loads
        out = []
        for record in records:
            row = list(record)
            for i, is_array in self._columns:
                value = row[i]
                if value is not None:
                    row[i] = _decode_array(value, loads) if is_array else loads(value)
            out.append(tuple(row))
        return out


class JsonDecodingCursor:
    """A server-side cursor (asyncpg's Cursor) whose fetched rows are decoded."""

    def __init__(self, cursor: Any, decoder: JsonRowDecoder) -> None:
        self._cursor = cursor
        self._decoder = decoder

    async def fetch(self, n: int, *, timeout: float | None = None) -> list[tuple[Any, ...]]:
        return self._decoder.rows(await self._cursor.fetch(n, timeout=timeout))

    async def fetchrow(self, *, timeout: float | None = None) -> tuple[Any, ...] | None:
        row = await self._cursor.fetchrow(timeout=timeout)
        return None if row is None else self._decoder.rows([row])[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class JsonDecodingStatement:
    """asyncpg's PreparedStatement for a statement with json columns, as SQLAlchemy's adapter uses
    it (get_attributes, fetch, cursor, get_statusmsg); the rest is the statement's."""

    def __init__(self, statement: Any, decoder: JsonRowDecoder) -> None:
        self._statement = statement
        self._decoder = decoder

    async def fetch(self, *args: Any, timeout: float | None = None) -> list[tuple[Any, ...]]:
        return self._decoder.rows(await self._statement.fetch(*args, timeout=timeout))

    async def fetchrow(self, *args: Any, timeout: float | None = None) -> tuple[Any, ...] | None:
        row = await self._statement.fetchrow(*args, timeout=timeout)
        return None if row is None else self._decoder.rows([row])[0]

    async def cursor(self, *args: Any, prefetch: int | None = None, timeout: float | None = None) -> JsonDecodingCursor:
        return JsonDecodingCursor(await self._statement.cursor(*args, prefetch=prefetch, timeout=timeout), self._decoder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._statement, name)


def decoding_json(statement: Any, loads: Loads) -> Any:
    """`statement` itself when it returns no json column (most do: nothing added per row)."""
    columns = json_columns(statement.get_attributes())
    return JsonDecodingStatement(statement, JsonRowDecoder(columns, loads)) if columns else statement
