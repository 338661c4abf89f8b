"""Keyset cursors for the newest-first lists (operations, audit): the (created_at, id) of the last
row returned, opaque to clients. A cursor this API did not make is a 422 `invalid_cursor`."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import struct
import uuid

from control_plane import errors

_LAYOUT = struct.Struct(">q16s")  # microseconds since the epoch, then the id's bytes
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode(created_at: dt.datetime, row_id: uuid.UUID | int) -> str:
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    raw = row_id.bytes if isinstance(row_id, uuid.UUID) else row_id.to_bytes(16, "big")
    return base64.urlsafe_b64encode(_LAYOUT.pack(micros, raw)).decode().rstrip("=")


def _decode(cursor: str) -> tuple[dt.datetime, bytes]:
    try:
        micros, raw = _LAYOUT.unpack(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return _EPOCH + dt.timedelta(microseconds=micros), raw
    except (ValueError, binascii.Error, struct.error, OverflowError):
        raise errors.InvalidCursor("the cursor is not one this API returned") from None


def decode_uuid(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    created_at, raw = _decode(cursor)
    return created_at, uuid.UUID(bytes=raw)


def decode_int(cursor: str) -> tuple[dt.datetime, int]:
    created_at, raw = _decode(cursor)
    return created_at, int.from_bytes(raw, "big")
