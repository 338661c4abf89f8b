"""The operations queue: every statement on `operations` and `operation_steps` lives here.

The job is the operation row, so the control plane queues an operation in the transaction (often
the very statement) that makes the catalog change asking for it, and the API reads what the workers
record. Workers claim operations with session-level advisory locks (`locks.OPERATION`, hashtext of
the id) on a connection of their own, so a dead worker's claims go with its connection. A NOTIFY on
WAKE_CHANNEL (heard at commit) wakes the workers; one on OPERATION_DONE_CHANNEL, sent by the
statement that ends an operation, answers long polls.

Each function takes anything with asyncpg's fetch/fetchrow/fetchval/execute (a connection or a
pool; the control plane adapts its session's connection), so it runs in its caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from contracts import locks
from contracts.channels import OPERATION_DONE_CHANNEL, WAKE_CHANNEL
from provisioning import announcement_outbox, events
from provisioning.servers import SERVER_COLUMNS, ServerInfo

if TYPE_CHECKING:
    from provisioning.steps.catalog import CatalogChange


class Catalog(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def execute(self, query: str, *args: Any) -> Any: ...


OPEN_STATES = ("queued", "running")  # an operation in either is open: at most one per tenant
CLAIM_WINDOW = 200  # due operations one claim walks past at most (beyond what it wants)


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    server_id: uuid.UUID | None  # where the tenant is placed (None: not yet)
    capacity: int  # that server's connection capacity


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed operation, started, with what running it needs."""

    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID
    params: dict[str, Any]
    tier: str
    server: ServerInfo | None  # where the tenant's placement points now
    first_step: int | None  # its first step not done (None: every step is)
    attempts: int  # that step's attempts, this one included
    cancel_requested: bool = False  # POST .../cancel: end it, with the pipeline's undo, before its next step


class NewOperation(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    params: dict[str, Any] = {}


class OpenOperation(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    kind: str


class LockedOperation(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    tenant_id: uuid.UUID
    state: str


class StepRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: str
    attempts: int
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class OperationRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID
    state: str
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    steps: list[StepRecord]
    progress: dict[str, Any] | None = None  # read by read_operation only (the lists leave it out)
    cancel_requested: bool = False


def _params(params: Mapping[str, Any]) -> str:
    return msgspec.json.encode(params).decode()


# -- enqueueing (the control plane, fleet migrations) --------------------------------------------
# The workers' wake-up, as an SQL expression for a statement that queues operations (heard at commit).
WAKE_WORKERS = f"pg_notify('{WAKE_CHANNEL}', '')"


def enqueue_clause(*, id: str, kind: str, tenant_id: str, params: str, source: str) -> str:
    """The INSERT that queues one operation, for a caller that composes it into a statement of its
    own as a CTE (the tenant create: tenant, operation, audit row and wake-up in one statement).
    Each argument is an SQL expression of that statement: its placeholders, or columns of `source`,
    the CTE the row is selected from."""
    return ("INSERT INTO operations (id, kind, tenant_id, state, params) "
            f"SELECT {id}, {kind}, {tenant_id}, 'queued', {params} FROM {source}")


def no_open_operation(tenant_id: str) -> str:
    """An SQL condition: the tenant (an expression of the caller's query) has no open operation."""
    return (f"NOT EXISTS (SELECT 1 FROM operations o WHERE o.tenant_id = {tenant_id} "
            "AND o.state IN ('queued', 'running'))")


async def enqueue(db: Catalog, kind: str, op: NewOperation) -> None:
    """Queue one operation and wake the workers. The one-open-operation-per-tenant index refuses a
    second one (a unique violation, in the caller's driver's terms)."""
    await db.execute(
        "WITH op AS (INSERT INTO operations (id, kind, tenant_id, state, params) "
        f"  VALUES ($1, $2, $3, 'queued', $4::jsonb)) SELECT {WAKE_WORKERS}",
        op.id, kind, op.tenant_id, _params(op.params))


async def enqueue_asked_erasure(db: Catalog, tenant_id: uuid.UUID) -> None:
    """The erasure asked for with the tenant's delete (`tenant_erasures.operation_id`, chosen by the
    API, not yet an operation), queued under that id; once it exists (a rerun), nothing."""
    await db.execute(
        "WITH asked AS (SELECT e.operation_id FROM tenant_erasures e WHERE e.tenant_id = $1 "
        "  AND e.completed_at IS NULL AND e.operation_id IS NOT NULL "
        "  AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = e.operation_id)), "
        "op AS (INSERT INTO operations (id, kind, tenant_id, state, params) "
        "  SELECT operation_id, 'erase_tenant', $1, 'queued', '{}'::jsonb FROM asked RETURNING id) "
        f"SELECT {WAKE_WORKERS} FROM op", tenant_id)


async def enqueue_many(db: Catalog, kind: str, ops: list[NewOperation]) -> None:
    """Queue operations of one kind in one statement and wake the workers (all or none: one tenant
    with an open operation refuses the lot)."""
    await db.execute(
        "WITH ops AS (INSERT INTO operations (id, kind, tenant_id, state, params) "
        "  SELECT u.id, $1, u.tenant_id, 'queued', u.params::jsonb "
        "  FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS u(id, tenant_id, params)) "
        f"SELECT {WAKE_WORKERS}",
        kind, [op.id for op in ops], [op.tenant_id for op in ops], [_params(op.params) for op in ops])


async def record_done(db: Catalog, op_id: uuid.UUID, kind: str, tenant_id: uuid.UUID, step: str,
                      params: Mapping[str, Any] | None = None) -> None:
    """An operation that took effect at once (suspend, resume): recorded succeeded, with its one step.
    `params` say why (billing's suspensions name their reason, so that a payment lifts only those)."""
    await db.execute(
        "WITH op AS (INSERT INTO operations (id, kind, tenant_id, state, params, started_at, finished_at) "
        "  VALUES ($1, $2, $3, 'succeeded', $5::jsonb, now(), now())), "
        f"{events.insert_clause(op_id='$1', kind='$2', tenant_id='$3', params='$5::jsonb')} "
        "INSERT INTO operation_steps (operation_id, position, name, state, attempts, started_at, finished_at) "
        "VALUES ($1, 0, $4, 'succeeded', 1, now(), now())", op_id, kind, tenant_id, step, _params(params or {}))


async def last_of_kind(db: Catalog, tenant_id: uuid.UUID, kind: str) -> uuid.UUID | None:
    """The id of the tenant's newest operation of `kind`."""
    return await db.fetchval("SELECT id FROM operations WHERE tenant_id = $1 AND kind = $2 "
                             "ORDER BY created_at DESC LIMIT 1", tenant_id, kind)


async def last_status_change(db: Catalog, tenant_id: uuid.UUID) -> tuple[str, dict[str, Any]] | None:
    """The kind and params of the tenant's latest suspend or resume."""
    row = await db.fetchrow("SELECT kind, params::text AS params FROM operations WHERE tenant_id = $1 "
                            "AND kind IN ('suspend_tenant', 'resume_tenant') ORDER BY created_at DESC LIMIT 1",
                            tenant_id)
    return None if row is None else (row["kind"], msgspec.json.decode(row["params"]))


async def open_operation(db: Catalog, tenant_id: uuid.UUID) -> OpenOperation | None:
    row = await db.fetchrow("SELECT id, kind FROM operations WHERE tenant_id = $1 "
                            "AND state IN ('queued', 'running')", tenant_id)
    return None if row is None else OpenOperation(id=row["id"], kind=row["kind"])


# -- retry (the API's) ----------------------------------------------------------------------------
async def lock_operation(db: Catalog, op_id: uuid.UUID) -> LockedOperation | None:
    """The operation, its row locked until the caller's transaction ends."""
    row = await db.fetchrow("SELECT kind, tenant_id, state FROM operations WHERE id = $1 FOR UPDATE", op_id)
    return None if row is None else LockedOperation(kind=row["kind"], tenant_id=row["tenant_id"], state=row["state"])


async def requeue(db: Catalog, op_id: uuid.UUID) -> None:
    """A failed operation queued again, its failed steps pending with their attempts reset (the
    worker resumes at its first step not done), and the workers woken. The one-open-operation index
    refuses it while another operation of the tenant is open."""
    await db.execute(
        "WITH steps AS (UPDATE operation_steps SET state = 'pending', attempts = 0 "
        "  WHERE operation_id = $1 AND state = 'failed'), "
        "op AS (UPDATE operations SET state = 'queued', error = NULL, finished_at = NULL, next_attempt_at = now(), "
        f"  cancel_requested_at = NULL WHERE id = $1) SELECT {WAKE_WORKERS}", op_id)


CANCELLED = "cancelled"  # the error of an operation ended by a cancel request


async def request_cancel(db: Catalog, op_id: uuid.UUID) -> None:
    """Ask the workers to end an open operation at its next step boundary (a queued one, or one
    waiting for a retry, is made due now and the workers are woken, so it ends at once). Durable: a
    worker that dies meanwhile leaves the request to the next one."""
    await db.execute(
        "WITH op AS (UPDATE operations SET cancel_requested_at = coalesce(cancel_requested_at, now()), "
        "  next_attempt_at = least(next_attempt_at, now()) WHERE id = $1 AND state IN ('queued', 'running')) "
        f"SELECT {WAKE_WORKERS}", op_id)


# -- reads (the API's; a long poll reads `read_operation` again the moment the operation ends) -----
_STEPS = msgspec.json.Decoder(list[StepRecord])
_OPERATION_WITH_STEPS = (
    "SELECT o.id, o.kind, o.tenant_id, o.state, o.error, o.created_at, o.started_at, o.finished_at, "
    "  coalesce((SELECT json_agg(json_build_object('name', s.name, 'state', s.state, 'attempts', s.attempts, "
    "      'error', s.error, 'started_at', s.started_at, 'finished_at', s.finished_at) ORDER BY s.position) "
    "    FROM operation_steps s WHERE s.operation_id = o.id), '[]')::text AS steps, "
    "  o.progress::text AS progress, o.cancel_requested_at IS NOT NULL AS cancel_requested "
    "FROM operations o WHERE o.id = $1")
_OPERATION_FIELDS = ("id", "kind", "tenant_id", "state", "error", "created_at", "started_at", "finished_at")
_STEP_FIELDS = ("name", "state", "attempts", "error", "started_at", "finished_at")


async def read_operation(db: Catalog, op_id: uuid.UUID) -> OperationRecord | None:
    """The operation with its steps, in one statement."""
    row = await db.fetchrow(_OPERATION_WITH_STEPS, op_id)
    if row is None:
        return None
    return OperationRecord(**{f: row[f] for f in _OPERATION_FIELDS}, steps=_STEPS.decode(row["steps"]),
                           progress=None if row["progress"] is None else msgspec.json.decode(row["progress"]),
                           cancel_requested=row["cancel_requested"])


async def tenant_operations(db: Catalog, tenant_id: uuid.UUID, limit: int) -> list[OperationRecord]:
    """The tenant's latest operations, newest first, with their steps."""
    return await list_operations(db, tenant_id=tenant_id, limit=limit)


async def list_operations(db: Catalog, *, limit: int, state: str | None = None, kind: str | None = None,
                          tenant_id: uuid.UUID | None = None,
                          before: tuple[dt.datetime, uuid.UUID] | None = None) -> list[OperationRecord]:
    """Operations across the fleet, newest first, with their steps; `before` is a keyset position
    (created_at, id) that the page starts after."""
    at, after_id = before if before is not None else (None, None)
    ops = await db.fetch(f"SELECT {', '.join(_OPERATION_FIELDS)} FROM operations "
                         "WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) "
                         "AND ($3::uuid IS NULL OR tenant_id = $3) "
                         "AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid)) "
                         "ORDER BY created_at DESC, id DESC LIMIT $6", state, kind, tenant_id, at, after_id, limit)
    steps = await db.fetch(f"SELECT operation_id, {', '.join(_STEP_FIELDS)} FROM operation_steps "
                           "WHERE operation_id = ANY($1::uuid[]) ORDER BY operation_id, position",
                           [op["id"] for op in ops]) if ops else []
    by_op: dict[uuid.UUID, list[StepRecord]] = {op["id"]: [] for op in ops}
    for step in steps:
        by_op[step["operation_id"]].append(StepRecord(**{f: step[f] for f in _STEP_FIELDS}))
    return [OperationRecord(**{f: op[f] for f in _OPERATION_FIELDS}, steps=by_op[op["id"]]) for op in ops]


async def count_by_state(db: Catalog) -> dict[str, int]:
    return {row["state"]: row["n"] for row in await db.fetch(
        "SELECT state, count(*) AS n FROM operations GROUP BY state")}


async def open_depth(db: Catalog) -> list[tuple[str, str, int]]:
    """(kind, state, count) of the open operations: the queue's depth (the partial index serves it)."""
    return [(row["kind"], row["state"], row["n"]) for row in await db.fetch(
        "SELECT kind, state, count(*) AS n FROM operations WHERE state IN ('queued', 'running') "
        "GROUP BY kind, state")]


# The operations that ended (the fleet migration's view of its tenants' outcomes), as a subquery.
ENDED_OPERATIONS = "SELECT id, state, error, finished_at FROM operations WHERE state IN ('succeeded', 'failed')"


# -- claiming (a worker's claims connection) -------------------------------------------------------
# The claim, in one query: release the claims of operations that ended here ($3), then walk the due
# operations oldest first -- not those this worker runs or just ended ($2), nor those on servers
# where it runs its share already ($6) -- taking the advisory lock of each until $1 are held. A lock
# another worker holds is simply not had (pg_try_advisory_lock), so no look at pg_locks is needed;
# the outer LIMIT stops the walk (and the locking) at $1. Volatile quals are never pushed into a
# subquery, so only rows the walk reaches are locked. The window ($5) bounds the walk; operations
# held by other workers take up at most their concurrency of it.
_CLAIM = (
    "WITH released AS MATERIALIZED (SELECT count(pg_advisory_unlock($4, hashtext(r::text))) AS n "
    "  FROM unnest($3::uuid[]) AS r) "
    "SELECT c.id, c.server_id, c.capacity FROM released, ("
    "  SELECT o.id, p.server_id, coalesce(s.capacity_connections, 100) AS capacity FROM operations o "
    "  LEFT JOIN placements p ON p.tenant_id = o.tenant_id LEFT JOIN database_servers s ON s.id = p.server_id "
    "  WHERE o.state IN ('queued', 'running') AND o.next_attempt_at <= now() AND o.id <> ALL($2::uuid[]) "
    "    AND (p.server_id IS NULL OR p.server_id <> ALL($6::uuid[])) "
    "  ORDER BY o.created_at LIMIT $5) AS c "
    "WHERE released.n >= 0 AND pg_try_advisory_lock($4, hashtext(c.id::text)) LIMIT $1")


async def claim(claims: Catalog, want: int, *, skip: list[uuid.UUID], release: list[uuid.UUID],
                full_servers: list[uuid.UUID]) -> list[Claim]:
    """Release `release`, then claim up to `want` due operations, oldest first, passing over `skip`
    and operations on `full_servers`. On the claims connection: the locks are its session's."""
    rows = await claims.fetch(_CLAIM, want, skip, release, locks.OPERATION, want + CLAIM_WINDOW, full_servers)
    return [Claim(id=r["id"], server_id=r["server_id"], capacity=r["capacity"]) for r in rows]


async def release(claims: Catalog, op_ids: list[uuid.UUID]) -> None:
    await claims.execute("SELECT pg_advisory_unlock($1, hashtext(id::text)) FROM unnest($2::uuid[]) AS id",
                         locks.OPERATION, op_ids)


# -- running (the runner) --------------------------------------------------------------------------
_SERVER_COLUMNS = [c.strip() for c in SERVER_COLUMNS.split(",")]
_SERVER_FIELDS = ", ".join(f"s.{c} AS srv_{c}" for c in _SERVER_COLUMNS)

# The claimed operations still due, with what running them needs, started in the same statement:
# running, their steps recorded once (the first one inserted running; $2 maps "kind/tier" to the
# pipeline's step names) or, when they exist already, the first one not done marked running (steps
# succeed in order, so every step before it is done). A data-modifying CTE cannot see rows another
# one inserts, so for each operation exactly one of `inserted` and `resumed` has its first step.
_START_CLAIMED = (
    f"WITH due AS (SELECT o.id, o.kind, o.tenant_id, o.params, o.cancel_requested_at, t.tier, p.server_id, "
    f"  {_SERVER_FIELDS} "
    "  FROM operations o JOIN tenants t ON t.id = o.tenant_id "
    "  LEFT JOIN placements p ON p.tenant_id = o.tenant_id LEFT JOIN database_servers s ON s.id = p.server_id "
    "  WHERE o.id = ANY($1::uuid[]) AND o.state IN ('queued', 'running') AND o.next_attempt_at <= now()), "
    "started AS (UPDATE operations o SET state = 'running', started_at = coalesce(o.started_at, now()) "
    "  FROM due WHERE o.id = due.id), "
    "inserted AS (INSERT INTO operation_steps (operation_id, position, name, state, attempts, started_at) "
    "  SELECT due.id, s.ord - 1, s.name, CASE WHEN s.ord = 1 THEN 'running' ELSE 'pending' END, "
    "    CASE WHEN s.ord = 1 THEN 1 ELSE 0 END, CASE WHEN s.ord = 1 THEN now() END "
    "  FROM due, jsonb_array_elements_text($2::jsonb -> (due.kind || '/' || due.tier)) WITH ORDINALITY AS s(name, ord) "
    "  ON CONFLICT (operation_id, position) DO NOTHING RETURNING operation_id, position, attempts), "
    "resumed AS (UPDATE operation_steps st SET state = 'running', attempts = st.attempts + 1, started_at = now() "
    "  FROM (SELECT operation_id, min(position) AS position FROM operation_steps "
    "    WHERE operation_id IN (SELECT id FROM due) AND state <> 'succeeded' GROUP BY operation_id) AS first "
    "  WHERE st.operation_id = first.operation_id AND st.position = first.position "
    "  RETURNING st.operation_id, st.position, st.attempts) "
    "SELECT due.*, coalesce(i.position, r.position) AS first_step, coalesce(i.attempts, r.attempts) AS attempts "
    "FROM due LEFT JOIN inserted i ON i.operation_id = due.id AND i.position = 0 "
    "LEFT JOIN resumed r ON r.operation_id = due.id")


def _started(row: Any) -> Started:
    params = row["params"]
    if isinstance(params, str):
        params = msgspec.json.decode(params)
    server = ServerInfo(**{c: row[f"srv_{c}"] for c in _SERVER_COLUMNS}) if row["srv_id"] else None
    return Started(id=row["id"], kind=row["kind"], tenant_id=row["tenant_id"], params=params or {},
                   tier=row["tier"], server=server, first_step=row["first_step"], attempts=row["attempts"] or 0,
                   cancel_requested=row["cancel_requested_at"] is not None)


async def start_claimed(db: Catalog, op_ids: list[uuid.UUID], step_names: str) -> list[Started]:
    """Start the claimed operations that are still due -- read after the claim, so a finish by a
    worker that held one just before is seen -- in one statement. `step_names` is JSON: "kind/tier"
    -> the pipeline's step names. The server is the one the tenant's placement names now: only the
    operation itself can change that placement (one open operation per tenant), as a step of its own."""
    return [_started(row) for row in await db.fetch(_START_CLAIMED, op_ids, step_names)]


async def advance(db: Catalog, op_id: uuid.UUID, done: int, running: int) -> tuple[int, bool]:
    """A step boundary, one statement: step `done` (-1: none) succeeded, step `running` running;
    returns the running step's attempts and whether a cancel was requested (the runner then ends
    the operation instead of running that step)."""
    row = await db.fetchrow(
        "WITH done AS (UPDATE operation_steps SET state = 'succeeded', error = NULL, finished_at = now() "
        "  WHERE operation_id = $1 AND position = $2) "
        "UPDATE operation_steps SET state = 'running', attempts = attempts + 1, started_at = now() "
        "WHERE operation_id = $1 AND position = $3 RETURNING attempts, "
        "  (SELECT cancel_requested_at IS NOT NULL FROM operations WHERE id = $1) AS cancelled",
        op_id, done, running)
    return row["attempts"], bool(row["cancelled"])


@functools.cache
def finished_statement(finish: CatalogChange, noted: bool = False) -> str:
    """The end of an operation as one statement (atomic on its own): its last step ($2) and the
    operation ($1) succeeded, the pipeline's catalog change for the tenant ($3), its lifecycle event, and a notification
    for whoever waits on the operation (heard at commit). With `noted`, also the outbox row of the
    announcement that follows (provisioning/announcement_outbox.py), whose id the statement returns."""
    clauses = [*finish.clauses,
               *([announcement_outbox.note_clause(tenant_id="$3::uuid")] if noted else []),
               # the lifecycle event, if the operation's kind reports one (provisioning/events.py)
               events.insert_clause(op_id="$1", kind="(SELECT kind FROM operations WHERE id = $1)", tenant_id="$3",
                                    params="(SELECT params FROM operations WHERE id = $1)"),
               "step AS (UPDATE operation_steps SET state = 'succeeded', error = NULL, finished_at = now() "
               "  WHERE operation_id = $1 AND position = $2)",
               "op AS (UPDATE operations SET state = 'succeeded', error = NULL, finished_at = now() WHERE id = $1)"]
    returned = ", (SELECT id FROM noted)" if noted else ""
    return (f"WITH {', '.join(clauses)} SELECT pg_notify('{OPERATION_DONE_CHANNEL}', $1::text){returned} "
            "WHERE $3::uuid IS NOT NULL")


async def finish(db: Catalog, op_id: uuid.UUID, last: int, tenant_id: uuid.UUID, change: CatalogChange,
                 noted: bool = False) -> int | None:
    """The operation succeeded, with its last step (`last`; -1: none ran) and `change`; with
    `noted`, the id of its announcement's outbox row (None without a tenant)."""
    if not noted:
        await db.execute(finished_statement(change), op_id, last, tenant_id)
        return None
    row = await db.fetchrow(finished_statement(change, noted=True), op_id, last, tenant_id)
    return row[1] if row is not None else None


async def retry_later(db: Catalog, op_id: uuid.UUID, position: int, error: str, delay: float) -> None:
    """A step failed and will be tried again in `delay` seconds (one statement)."""
    await db.execute(
        "WITH step AS (UPDATE operation_steps SET state = 'pending', error = $3, finished_at = now() "
        "  WHERE operation_id = $1 AND position = $2) "
        "UPDATE operations SET error = $3, next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
        op_id, position, error, delay)


async def fail(db: Catalog, op_id: uuid.UUID, position: int, error: str) -> None:
    """A step failed for good, and with it the operation; whoever waits on it hears at commit (the
    caller's transaction also records the pipeline's failure in the catalog)."""
    await db.execute(
        "WITH step AS (UPDATE operation_steps SET state = 'failed', error = $3, finished_at = now() "
        "  WHERE operation_id = $1 AND position = $2), "
        "op AS (UPDATE operations SET state = 'failed', error = $3, finished_at = now() WHERE id = $1) "
        f"SELECT pg_notify('{OPERATION_DONE_CHANNEL}', $1::text)", op_id, position, error)


async def operation_error(db: Catalog, op_id: uuid.UUID) -> str | None:
    """The error an operation ended with (a pipeline's failure copies it where it reports)."""
    return await db.fetchval("SELECT error FROM operations WHERE id = $1", op_id)


# -- what steps record about their own operation ---------------------------------------------------
async def save_params(db: Catalog, op_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    """Merge `values` into the operation's params (what a rerun of its steps must know)."""
    await db.execute("UPDATE operations SET params = params || $2::jsonb WHERE id = $1", op_id, _params(values))


async def forget_params(db: Catalog, op_id: uuid.UUID, names: Sequence[str]) -> None:
    """Drop `names` from the operation's params (what a step no longer needs and must not keep)."""
    await db.execute("UPDATE operations SET params = params - $2::text[] WHERE id = $1", op_id, list(names))


async def redo_steps_after(db: Catalog, op_id: uuid.UUID, after: int) -> None:
    """Mark the succeeded steps after position `after` to be done again (a retry starts there)."""
    await db.execute("UPDATE operation_steps SET state = 'pending' WHERE operation_id = $1 AND position > $2 "
                     "AND state = 'succeeded'", op_id, after)


async def redo_steps_unless_placed(db: Catalog, op_id: uuid.UUID, after: str, *, tenant_id: uuid.UUID,
                                   server_id: uuid.UUID, database: str, schema: str | None) -> None:
    """Mark the succeeded steps after the step named `after` to be done again, unless the tenant is
    placed at (`server_id`, `database`, `schema`) by now. By name, not position: a pipeline may
    gain steps before it (a move's optional backup first)."""
    await db.execute(
        "UPDATE operation_steps SET state = 'pending' WHERE operation_id = $1 AND state = 'succeeded' "
        "AND position > (SELECT s.position FROM operation_steps s WHERE s.operation_id = $1 AND s.name = $2) "
        "AND NOT EXISTS (SELECT 1 FROM placements WHERE tenant_id = $3 "
        "  AND server_id = $4 AND database_name = $5 AND schema_name IS NOT DISTINCT FROM $6)",
        op_id, after, tenant_id, server_id, database, schema)


# Retention (provisioning/retention.py): finished operations older than the cutoff, with their steps
# (ON DELETE CASCADE), at most `batch` per statement. Kept whatever their age: each tenant's newest
# operation of each kind (a failed tenant's retry target; the latest suspend or resume that billing
# reads, last_status_change) and any a backup or a fleet migration's tenant row names.
_PRUNE_FINISHED = """
WITH doomed AS (
  SELECT o.id FROM operations o
  WHERE o.created_at < now() - make_interval(days => $1) AND o.state IN ('succeeded', 'failed')
    AND o.finished_at < now() - make_interval(days => $1)
    AND EXISTS (SELECT 1 FROM operations n WHERE n.tenant_id = o.tenant_id AND n.kind = o.kind
                AND (n.created_at, n.id) > (o.created_at, o.id))
    AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.operation_id = o.id)
    AND NOT EXISTS (SELECT 1 FROM migration_run_tenants m WHERE m.operation_id = o.id)
  ORDER BY o.created_at LIMIT $2
  FOR UPDATE OF o SKIP LOCKED)
DELETE FROM operations WHERE id IN (SELECT id FROM doomed)
"""


async def prune_finished(db: Catalog, days: int, batch: int) -> int:
    """Delete one batch of old finished operations (see above); how many went."""
    status = await db.execute(_PRUNE_FINISHED, days, batch)
    return int(status.split()[-1])


async def save_progress(db: Catalog, op_id: uuid.UUID, progress: Mapping[str, Any]) -> None:
    """What the operation has done so far (replaces what was saved before)."""
    await db.execute("UPDATE operations SET progress = $2::jsonb WHERE id = $1", op_id, _params(progress))
