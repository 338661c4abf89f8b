"""The queue's statements that the worker's and the API's tests do not reach on their own: queueing
(one, many, refused while another is open), an operation done at once, retry, a step retried later
or failed for good, saved params, steps marked to be done again, and the reads, through asyncpg and
through a SQLAlchemy session's connection alike. Catalog only: a catalog of its own."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.exc import IntegrityError

from contracts.channels import OPERATION_DONE_CHANNEL, WAKE_CHANNEL
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.catalog.driver_sql import DriverSQL
from provisioning import queue
from provisioning.steps.catalog import ACTIVATE_TENANT
from tests.conftest import catalog_pool
from tests.provisioning.steps.test_catalog import add_server

CATALOG = "catalog_queue"


@pytest.fixture
async def catalog(pg) -> AsyncIterator[asyncpg.Pool]:
    async with catalog_pool(pg, CATALOG) as pool:
        yield pool


async def new_tenant(catalog: asyncpg.Pool, status: str = "provisioning") -> uuid.UUID:
    tenant_id = uuid.uuid4()
    await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', 'dedicated', $3)",
                          tenant_id, f"t{tenant_id.hex[:12]}", status)
    return tenant_id


async def add_steps(catalog: asyncpg.Pool, op_id: uuid.UUID, states: list[str]) -> None:
    await catalog.executemany(
        "INSERT INTO operation_steps (operation_id, position, name, state, attempts, error) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [(op_id, i, f"step_{i}", state, 0 if state == "pending" else 3 if state == "failed" else 1,
          "boom" if state == "failed" else None) for i, state in enumerate(states)])


async def step_states(catalog: asyncpg.Pool, op_id: uuid.UUID) -> list[tuple[str, int]]:
    return [(r["state"], r["attempts"]) for r in await catalog.fetch(
        "SELECT state, attempts FROM operation_steps WHERE operation_id = $1 ORDER BY position", op_id)]


class Heard:
    """NOTIFYs on a channel, as a listener on its own connection hears them (at commit)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.payloads = conn, []

    async def __aenter__(self) -> Heard:
        await self.conn.add_listener(WAKE_CHANNEL, lambda *a: self.payloads.append((a[2], a[3])))
        await self.conn.add_listener(OPERATION_DONE_CHANNEL, lambda *a: self.payloads.append((a[2], a[3])))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.conn.close()

    async def settle(self) -> list[tuple[str, str]]:
        await self.conn.execute("SELECT 1")  # notifications sent before this have arrived
        await asyncio.sleep(0.05)
        return self.payloads


async def test_an_enqueued_operation_wakes_the_workers_and_is_the_tenants_one_open_operation(catalog, pg):
    tenant_id = await new_tenant(catalog, "active")
    async with Heard(await asyncpg.connect(pg.dsn(CATALOG))) as heard:
        op = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id, params={"tier": "schema"})
        await queue.enqueue(catalog, "move_tenant", op)
        assert (await heard.settle()) == [(WAKE_CHANNEL, "")]
    assert await queue.open_operation(catalog, tenant_id) == queue.OpenOperation(id=op.id, kind="move_tenant")
    row = await catalog.fetchrow("SELECT state, params FROM operations WHERE id = $1", op.id)
    assert row["state"] == "queued" and row["params"] == '{"tier": "schema"}'
    with pytest.raises(asyncpg.UniqueViolationError):
        await queue.enqueue(catalog, "delete_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id))


async def test_many_are_queued_together_or_not_at_all(catalog):
    free, busy = await new_tenant(catalog, "active"), await new_tenant(catalog, "active")
    await queue.enqueue(catalog, "migrate_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=busy))
    ops = [queue.NewOperation(id=uuid.uuid4(), tenant_id=t, params={"target": "t0002"}) for t in (free, busy)]
    with pytest.raises(asyncpg.UniqueViolationError):
        await queue.enqueue_many(catalog, "migrate_tenant", ops)
    assert await queue.open_operation(catalog, free) is None
    await queue.enqueue_many(catalog, "migrate_tenant", ops[:1])
    assert await queue.open_operation(catalog, free) == queue.OpenOperation(id=ops[0].id, kind="migrate_tenant")


async def test_an_operation_done_at_once_is_recorded_with_its_step_and_is_not_open(catalog):
    tenant_id = await new_tenant(catalog, "active")
    op_id = uuid.uuid4()
    await queue.record_done(catalog, op_id, "suspend_tenant", tenant_id, "set_status")
    op = await queue.read_operation(catalog, op_id)
    assert (op.kind, op.state, op.started_at is not None, op.finished_at is not None) == \
        ("suspend_tenant", "succeeded", True, True)
    assert [(s.name, s.state, s.attempts) for s in op.steps] == [("set_status", "succeeded", 1)]
    assert await queue.open_operation(catalog, tenant_id) is None


async def test_retry_queues_a_failed_operation_again_from_its_failed_step(catalog, pg):
    tenant_id = await new_tenant(catalog, "failed")
    op_id = uuid.uuid4()
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state, error, finished_at, next_attempt_at) "
                          "VALUES ($1, 'create_tenant', $2, 'failed', 'boom', now(), now() + interval '1 hour')",
                          op_id, tenant_id)
    await add_steps(catalog, op_id, ["succeeded", "failed", "pending"])
    async with catalog.acquire() as conn, conn.transaction():
        assert await queue.lock_operation(conn, op_id) == queue.LockedOperation(
            kind="create_tenant", tenant_id=tenant_id, state="failed")
        other = await asyncpg.connect(pg.dsn(CATALOG))
        try:  # the row stays locked until the retry's transaction ends
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute("SELECT 1 FROM operations WHERE id = $1 FOR UPDATE NOWAIT", op_id)
        finally:
            await other.close()
        await queue.requeue(conn, op_id)
    assert await step_states(catalog, op_id) == [("succeeded", 1), ("pending", 0), ("pending", 0)]
    row = await catalog.fetchrow("SELECT state, error, finished_at, next_attempt_at <= now() AS due "
                                 "FROM operations WHERE id = $1", op_id)
    assert (row["state"], row["error"], row["finished_at"], row["due"]) == ("queued", None, None, True)
    assert await queue.lock_operation(catalog, uuid.uuid4()) is None


async def test_a_retry_is_refused_while_another_operation_of_the_tenant_is_open(catalog):
    tenant_id = await new_tenant(catalog, "active")
    failed = uuid.uuid4()
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state) VALUES ($1, 'migrate_tenant', $2, "
                          "'failed')", failed, tenant_id)
    await queue.enqueue(catalog, "move_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id))
    with pytest.raises(asyncpg.UniqueViolationError):
        await queue.requeue(catalog, failed)


async def started(catalog: asyncpg.Pool, names: list[str]) -> queue.Started:
    tenant_id = await new_tenant(catalog)
    op_id = uuid.uuid4()
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id) VALUES ($1, 'create_tenant', $2)",
                          op_id, tenant_id)
    (op,) = await queue.start_claimed(catalog, [op_id], json.dumps({"create_tenant/dedicated": names}))
    return op


async def test_a_failed_step_is_retried_later_then_fails_the_operation(catalog, pg):
    op = await started(catalog, ["one", "two"])
    await queue.retry_later(catalog, op.id, 0, "OSError: refused", 2.0)
    assert await step_states(catalog, op.id) == [("pending", 1), ("pending", 0)]
    row = await catalog.fetchrow("SELECT state, error, next_attempt_at - now() AS wait FROM operations "
                                 "WHERE id = $1", op.id)
    assert (row["state"], row["error"]) == ("running", "OSError: refused") and 1 < row["wait"].total_seconds() <= 2
    assert await queue.start_claimed(catalog, [op.id], "{}") == []  # not due yet

    await catalog.execute("UPDATE operations SET next_attempt_at = now() WHERE id = $1", op.id)
    (op,) = await queue.start_claimed(catalog, [op.id], "{}")  # resumed at the step that failed
    assert (op.first_step, op.attempts) == (0, 2)
    async with Heard(await asyncpg.connect(pg.dsn(CATALOG))) as heard:
        await queue.fail(catalog, op.id, 0, "OSError: refused")
        assert (await heard.settle()) == [(OPERATION_DONE_CHANNEL, str(op.id))]
    record = await queue.read_operation(catalog, op.id)
    assert (record.state, record.error, record.finished_at is not None) == ("failed", "OSError: refused", True)
    assert [(s.state, s.error) for s in record.steps] == [("failed", "OSError: refused"), ("pending", None)]


async def test_step_boundaries_and_the_finish(catalog, pg):
    op = await started(catalog, ["one", "two"])
    assert await queue.advance(catalog, op.id, 0, 1) == (1, False)
    assert await step_states(catalog, op.id) == [("succeeded", 1), ("running", 1)]
    async with Heard(await asyncpg.connect(pg.dsn(CATALOG))) as heard:
        await queue.finish(catalog, op.id, 1, op.tenant_id, ACTIVATE_TENANT)
        assert (await heard.settle()) == [(OPERATION_DONE_CHANNEL, str(op.id))]
    assert await step_states(catalog, op.id) == [("succeeded", 1), ("succeeded", 1)]
    assert await catalog.fetchval("SELECT state FROM operations WHERE id = $1", op.id) == "succeeded"
    assert await catalog.fetchval("SELECT status FROM tenants WHERE id = $1", op.tenant_id) == "active"


async def test_saved_params_are_merged_into_the_operations_params(catalog):
    tenant_id = await new_tenant(catalog, "active")
    op = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id, params={"tier": "schema"})
    await queue.enqueue(catalog, "move_tenant", op)
    await queue.save_params(catalog, op.id, {"source": {"tier": "dedicated"}})
    await queue.save_params(catalog, op.id, {"target": {"tier": "schema"}, "tier": "shared"})
    (started_op,) = await queue.start_claimed(catalog, [op.id], "{}")
    assert started_op.params == {"tier": "shared", "source": {"tier": "dedicated"}, "target": {"tier": "schema"}}


async def test_steps_are_marked_to_be_done_again_unless_the_tenant_is_placed_there(catalog):
    server_id = await add_server(catalog, "s", 100)
    for placed, expected in ((False, ["succeeded", "pending", "pending", "failed", "pending"]),
                             (True, ["succeeded", "succeeded", "succeeded", "failed", "pending"])):
        tenant_id = await new_tenant(catalog, "active")
        if placed:
            await catalog.execute("INSERT INTO placements (tenant_id, server_id, database_name, role_name, "
                                  "schema_name) VALUES ($1, $2, 'tp_schemas', 'r', 's1')", tenant_id, server_id)
        op_id = uuid.uuid4()
        await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state) VALUES ($1, 'move_tenant', $2, "
                              "'failed')", op_id, tenant_id)
        await add_steps(catalog, op_id, ["succeeded", "succeeded", "succeeded", "failed", "pending"])
        await queue.redo_steps_unless_placed(catalog, op_id, "step_0", tenant_id=tenant_id, server_id=server_id,
                                             database="tp_schemas", schema="s1")
        assert [state for state, _ in await step_states(catalog, op_id)] == expected


async def test_the_reads_are_the_same_through_a_sqlalchemy_session(catalog, pg):
    tenant_id = await new_tenant(catalog, "active")
    done, failed = uuid.uuid4(), uuid.uuid4()
    await queue.record_done(catalog, done, "resume_tenant", tenant_id, "set_status")
    await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state, created_at) VALUES "
                          "($1, 'migrate_tenant', $2, 'failed', clock_timestamp())", failed, tenant_id)
    await add_steps(catalog, failed, ["succeeded", "failed"])
    engine = create_engine(pg.dsn(CATALOG), pool_size=1)
    try:
        async with sessionmaker(engine)() as session, session.begin():
            db = DriverSQL(await session.connection())
            listed = await queue.tenant_operations(db, tenant_id, 50)
            assert listed == await queue.tenant_operations(catalog, tenant_id, 50)
            assert [op.id for op in listed] == [failed, done]  # newest first
            assert await queue.read_operation(db, failed) == await queue.read_operation(catalog, failed) == listed[0]
            assert await queue.count_by_state(db) == {"succeeded": 1, "failed": 1}
            assert await queue.open_operation(db, tenant_id) is None
        async with sessionmaker(engine)() as session:
            db = DriverSQL(await session.connection())
            await queue.enqueue(db, "move_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id))
            with pytest.raises(IntegrityError):  # in the terms of the caller's driver
                await queue.enqueue(db, "move_tenant", queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id))
            await session.rollback()
    finally:
        await engine.dispose()
    assert await queue.open_operation(catalog, tenant_id) is None  # rolled back with the session's transaction
