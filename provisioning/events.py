"""Lifecycle events: every statement on `tenant_events` lives here.

An event is written by the very statement that records its operation's end (queue.finish for what the
workers run, queue.record_done for a suspend or resume), as one more CTE of it: the event commits with
the change it reports or not at all, and the unique operation id makes it one per operation. What an
event says is read in that statement's snapshot, before its own changes: a deleted tenant's event
still names the server it was on.

Delivery (EVENTS_WEBHOOK_URL) is the outbox's (provisioning/outbox.py); listing (GET /v1/events) reads
`page()`. Ids grow with each insert, but transactions commit in any order, so the consumer's feed
(`after=`) lists an event only once every transaction that could still add a smaller id has ended
(`pg_snapshot_xmin`): a consumer that saves the last id it saw never skips one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

EventType = Literal["tenant.created", "tenant.moved", "tenant.restored", "tenant.suspended", "tenant.resumed",
                    "tenant.deleted"]

# the operation kinds that report an event when they succeed, and the event each reports
TYPES: dict[str, str] = {
    "create_tenant": "tenant.created",
    "clone_tenant": "tenant.created",  # a new tenant, made from a backup (data.source says so)
    "move_tenant": "tenant.moved",
    "restore_tenant": "tenant.restored",
    "revive_tenant": "tenant.restored",  # a deleted tenant back under its id (data.revived says so)
    "suspend_tenant": "tenant.suspended",
    "resume_tenant": "tenant.resumed",
    "delete_tenant": "tenant.deleted",
}
EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(TYPES.values()))

_KINDS = ", ".join(f"('{kind}', '{type_}')" for kind, type_ in TYPES.items())


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """An event, as GET /v1/events lists it and a webhook receives it. `data` holds the tenant's
    slug, tier and server name (a move adds `from` with the old ones, a suspend or resume its
    `reason` when billing made it, a clone `source: "backup"`, a deleted tenant restored
    `revived: true`); never a secret."""

    id: int  # grows with time; a receiver dedupes on it
    type: str
    tenant_id: uuid.UUID
    operation_id: uuid.UUID
    occurred_at: dt.datetime
    data: dict[str, Any]


def insert_clause(*, op_id: str, kind: str, tenant_id: str, params: str) -> str:
    """The CTE that records the event of an operation that ends in the caller's statement (nothing
    for a kind without one). Arguments are SQL expressions of that statement: the operation's id,
    kind, tenant id and params (jsonb)."""
    return (
        "event AS (INSERT INTO tenant_events (type, tenant_id, operation_id, data) "
        f"  SELECT m.type, t.id, {op_id}, jsonb_strip_nulls(jsonb_build_object("
        "      'slug', t.slug, 'tier', t.tier, 'server', s.name, 'reason', e.params->>'reason', "
        "      'source', CASE WHEN m.kind = 'clone_tenant' THEN 'backup' END, "
        "      'revived', CASE WHEN m.kind = 'revive_tenant' THEN true END, "
        "      'from', CASE WHEN m.kind = 'move_tenant' THEN jsonb_build_object("
        "        'tier', e.params->'source'->>'tier', 'server', "
        "        (SELECT f.name FROM database_servers f WHERE f.id::text = e.params->'source'->>'server_id')) END)) "
        f"  FROM (VALUES {_KINDS}) AS m(kind, type) "
        f"  CROSS JOIN (SELECT {params} AS params) AS e "
        f"  JOIN tenants t ON t.id = {tenant_id} "
        "  LEFT JOIN placements p ON p.tenant_id = t.id "
        "  LEFT JOIN database_servers s ON s.id = p.server_id "
        f"  WHERE m.kind = {kind} "
        "  ON CONFLICT (operation_id) DO NOTHING)")


# -- reading (the API's) ---------------------------------------------------------------------------
_COLUMNS = "id, type, tenant_id, operation_id, occurred_at, data::text AS data"
# every transaction that could still add an event below these ids has ended
_SETTLED = "txid < pg_snapshot_xmin(pg_current_snapshot())"
_DATA = msgspec.json.Decoder(dict[str, Any])


def _event(row: Any) -> Event:
    return Event(id=row["id"], type=row["type"], tenant_id=row["tenant_id"], operation_id=row["operation_id"],
                 occurred_at=row["occurred_at"], data=_DATA.decode(row["data"]))


async def page(db: Any, *, after: int | None, before: int | None, type_: str | None, tenant_id: uuid.UUID | None,
               limit: int) -> list[Event]:
    """Up to `limit` events: with `after`, those after it, oldest first, settled only (the consumer's
    feed); else the newest first, before `before` when given. `db` has asyncpg's fetch."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if type_ is not None:
        where.append(f"type = {arg(type_)}")
    if tenant_id is not None:
        where.append(f"tenant_id = {arg(tenant_id)}")
    if after is not None:
        where += [f"id > {arg(after)}", _SETTLED]
        order = "id"
    else:
        if before is not None:
            where.append(f"id < {arg(before)}")
        order = "id DESC"
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM tenant_events {clause}ORDER BY {order} LIMIT {arg(limit)}", *args)
    return [_event(row) for row in rows]


# -- delivery (the outbox's) -----------------------------------------------------------------------
CLAIM = (
    "UPDATE tenant_events SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) "
    "WHERE id IN (SELECT id FROM tenant_events WHERE delivered_at IS NULL AND next_attempt_at <= now() "
    "  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) "
    f"RETURNING {_COLUMNS}, attempts")
DELIVERED = "UPDATE tenant_events SET delivered_at = now(), last_error = NULL WHERE id = $1 AND delivered_at IS NULL"
FAILED = ("UPDATE tenant_events SET last_error = $2, next_attempt_at = now() + make_interval(secs => $3) "
          "WHERE id = $1 AND delivered_at IS NULL")


def delivery_body(row: Any) -> bytes:
    """What a receiver gets for a claimed row: the event as listed, plus the attempt."""
    return msgspec.json.encode({**msgspec.structs.asdict(_event(row)), "attempt": row["attempts"]})


async def scrub_tenant(db: Any, tenant_id: uuid.UUID) -> int:
    """An erased tenant's events keep what happened and when, not the slug that named it (the
    tombstone keeps the id alike); undelivered ones are not sent any more. Returns how many."""
    status = await db.execute(
        "UPDATE tenant_events SET data = data - 'slug', delivered_at = coalesce(delivered_at, now()) "
        "WHERE tenant_id = $1", tenant_id)
    return int(status.split()[-1])
