"""Lifecycle events: every statement on `tenant_events` lives here.

An event is written by the very statement that records its operation's end (queue.finish for what the
workers run, queue.record_done for a suspend or resume), as one more CTE of it: the event commits with
the change it reports or not at all, and the unique operation id makes it one per operation. What an
event says is read in that statement's snapshot, before its own changes: a deleted tenant's event
still names the server it was on.

Delivery (EVENTS_WEBHOOK_URL) is the outbox's (provisioning/outbox.py); listing (GET /v1/events) reads
`page()`. An event the webhook takes (EVENTS_WEBHOOK_TYPES) is `pending` until a 2xx (`delivered`) or
until it has waited EVENTS_GIVE_UP_AFTER_HOURS since `pending_since` (`abandoned`: no more attempts;
an admin's `redeliver()` makes it pending again with a new window). Retention (`prune()`) deletes
old events, never one still waiting for the webhook.

Ids grow with each insert, but transactions commit in any order, so the consumer's feed (`after=`)
lists an event only once every transaction that could still add a smaller id has ended
(`pg_snapshot_xmin`): a consumer that saves the last id it saw never skips one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
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


DeliveryState = Literal["pending", "delivered", "abandoned"]
DELIVERY_STATES: tuple[str, ...] = ("pending", "delivered", "abandoned")


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """Where an event's webhook delivery stands (listed beside the event; never in the body sent)."""

    state: DeliveryState
    attempts: int
    last_error: str | None  # "HTTP 503" or the transport error's class: never the URL
    delivered_at: dt.datetime | None
    abandoned_at: dt.datetime | None


class Listed(msgspec.Struct, frozen=True, kw_only=True):
    event: Event
    delivery: Delivery


def parse_types(value: str | None) -> tuple[str, ...] | None:
    """EVENTS_WEBHOOK_TYPES ("tenant.created, tenant.deleted") as a tuple; None or blank: every type.
    An unknown type raises ValueError naming it (a typo would otherwise silence a type for good)."""
    if value is None or not value.strip():
        return None
    types = tuple(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    if not types:
        raise ValueError("names no event type (unset it for every type)")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {', '.join(map(repr, unknown))} (known: {', '.join(EVENT_TYPES)})")
    return types


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
_DELIVERY = "attempts, last_error, delivered_at, abandoned_at"
_STATE = {"delivered": "delivered_at IS NOT NULL", "abandoned": "delivered_at IS NULL AND abandoned_at IS NOT NULL",
          "pending": "delivered_at IS NULL AND abandoned_at IS NULL"}
# every transaction that could still add an event below these ids has ended
_SETTLED = "txid < pg_snapshot_xmin(pg_current_snapshot())"
_DATA = msgspec.json.Decoder(dict[str, Any])


def _event(row: Any) -> Event:
    return Event(id=row["id"], type=row["type"], tenant_id=row["tenant_id"], operation_id=row["operation_id"],
                 occurred_at=row["occurred_at"], data=_DATA.decode(row["data"]))


def _listed(row: Any) -> Listed:
    state = "delivered" if row["delivered_at"] else "abandoned" if row["abandoned_at"] else "pending"
    return Listed(event=_event(row), delivery=Delivery(
        state=state, attempts=row["attempts"], last_error=row["last_error"], delivered_at=row["delivered_at"],
        abandoned_at=row["abandoned_at"]))


async def page(db: Any, *, after: int | None, before: int | None, type_: str | None, tenant_id: uuid.UUID | None,
               limit: int, state: str | None = None) -> list[Listed]:
    """Up to `limit` events: with `after`, those after it, oldest first, settled only (the consumer's
    feed); else the newest first, before `before` when given; `state` a delivery state. `db` has
    asyncpg's fetch."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if type_ is not None:
        where.append(f"type = {arg(type_)}")
    if tenant_id is not None:
        where.append(f"tenant_id = {arg(tenant_id)}")
    if state is not None:
        where.append(_STATE[state])
    if after is not None:
        where += [f"id > {arg(after)}", _SETTLED]
        order = "id"
    else:
        if before is not None:
            where.append(f"id < {arg(before)}")
        order = "id DESC"
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = await db.fetch(f"SELECT {_COLUMNS}, {_DELIVERY} FROM tenant_events {clause}ORDER BY {order} "
                          f"LIMIT {arg(limit)}", *args)
    return [_listed(row) for row in rows]


async def redeliver(db: Any, event_id: int) -> tuple[Listed, int] | None:
    """An abandoned event pending again, due now, with a new give-up window and its attempts back
    at 0, so its retries back off from EVENTS_RETRY_BASE_SECONDS again; with the attempts it had
    (for the audit). None when `event_id` names no abandoned event (see `delivery_state()`)."""
    row = await db.fetchrow(
        "WITH before AS (SELECT id AS before_id, attempts AS before_attempts FROM tenant_events "
        f"  WHERE id = $1 AND {_STATE['abandoned']} FOR UPDATE) "
        "UPDATE tenant_events SET abandoned_at = NULL, pending_since = now(), next_attempt_at = now(), attempts = 0 "
        f"FROM before WHERE id = before_id RETURNING {_COLUMNS}, {_DELIVERY}, before_attempts", event_id)
    return None if row is None else (_listed(row), row["before_attempts"])


def _abandoned_of(tenant_id: uuid.UUID | None, type_: str | None, args: list[Any]) -> str:
    where = [_STATE["abandoned"]]
    if tenant_id is not None:
        args.append(tenant_id)
        where.append(f"tenant_id = ${len(args)}")
    if type_ is not None:
        args.append(type_)
        where.append(f"type = ${len(args)}")
    return " AND ".join(where)


async def redeliver_abandoned(db: Any, *, tenant_id: uuid.UUID | None, type_: str | None,
                              limit: int) -> tuple[list[int], bool]:
    """`redeliver()` for up to `limit` abandoned events (oldest first) of a tenant and/or a type:
    their ids, and whether more abandoned ones match."""
    args: list[Any] = [limit]
    where = _abandoned_of(tenant_id, type_, args)
    rows = await db.fetch(
        "UPDATE tenant_events SET abandoned_at = NULL, pending_since = now(), next_attempt_at = now(), attempts = 0 "
        f"WHERE id IN (SELECT id FROM tenant_events WHERE {where} ORDER BY id LIMIT $1 FOR UPDATE) RETURNING id", *args)
    args = []
    more = await db.fetchval(f"SELECT EXISTS (SELECT 1 FROM tenant_events WHERE {_abandoned_of(tenant_id, type_, args)})",
                             *args)
    return sorted(r["id"] for r in rows), bool(more)


async def delivery_state(db: Any, event_id: int) -> str | None:
    """An event's delivery state; None when there is no such event."""
    return await db.fetchval(
        "SELECT CASE WHEN delivered_at IS NOT NULL THEN 'delivered' WHEN abandoned_at IS NOT NULL THEN 'abandoned' "
        "ELSE 'pending' END FROM tenant_events WHERE id = $1", event_id)


async def prune(db: Any, *, days: int, batch: int, waiting_types: Sequence[str]) -> int:
    """Delete up to `batch` events older than `days`, oldest first, except those still waiting for
    the webhook: undelivered, not given up, of a type in `waiting_types` (the webhook's types; none
    without a webhook). One given up, delivered, or that no webhook takes goes. Returns how many."""
    status = await db.execute(
        "DELETE FROM tenant_events WHERE id IN (SELECT id FROM tenant_events "
        "  WHERE occurred_at < now() - make_interval(days => $1) "
        f"  AND NOT ({_STATE['pending']} AND type = ANY($3::text[])) "
        "  ORDER BY occurred_at, id LIMIT $2)", days, batch, list(waiting_types))
    return int(status.split()[-1])


# -- delivery (the outbox's) -----------------------------------------------------------------------


def _due(types: str, window: str, within: bool) -> str:
    """Pending, of a type the webhook takes (`types`, a text[]), its next attempt come, and within its
    window (`window` seconds since pending_since) or, not `within`, past it."""
    return (f"{_STATE['pending']} AND next_attempt_at <= now() AND type = ANY({types}::text[]) "
            f"AND pending_since {'>' if within else '<='} now() - make_interval(secs => {window})")


CLAIM = (  # $1 rows, leased $2 seconds; $3 the types, $4 the give-up window
    "UPDATE tenant_events SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2) "
    f"WHERE id IN (SELECT id FROM tenant_events WHERE {_due('$3', '$4', within=True)} "
    "  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) "
    f"RETURNING {_COLUMNS}, attempts")
# what would be due but has waited its window out is given up instead of tried again ($1 rows, $2
# the types, $3 the window). A row leased to a post in flight is not due, so it is never given up
# while a receiver may be answering.
ABANDON = (
    "UPDATE tenant_events SET abandoned_at = now() "
    f"WHERE id IN (SELECT id FROM tenant_events WHERE {_due('$2', '$3', within=False)} "
    "  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)")
# a 2xx wins over a give-up recorded meanwhile (a lease shorter than the post): delivered is delivered
DELIVERED = ("UPDATE tenant_events SET delivered_at = now(), abandoned_at = NULL, last_error = NULL "
             "WHERE id = $1 AND delivered_at IS NULL")
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
