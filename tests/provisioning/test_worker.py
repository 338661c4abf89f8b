"""The worker's claim: it walks past operations other workers hold, never takes one twice, never
takes back at once one it just ended, and keeps to its share of each server; and a stopped worker
leaves nothing running or open. Catalog only: a catalog of its own, operations that are claimed and
never run (or fail at once for want of a server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from contracts.locks import OPERATION
from provisioning.worker import Worker, WorkerConfig
from tests.conftest import SECRET_KEY, catalog_pool
from tests.provisioning.steps.test_catalog import add_server

CATALOG = "catalog_claims"


@pytest.fixture
async def catalog(pg) -> AsyncIterator[asyncpg.Pool]:
    async with catalog_pool(pg, CATALOG) as pool:
        yield pool


async def queue(catalog: asyncpg.Pool, n: int, server_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """`n` create operations, oldest first, for tenants placed on `server_id` (None: not placed)."""
    ops = []
    for _ in range(n):
        tenant_id, op_id = uuid.uuid4(), uuid.uuid4()
        await catalog.execute("INSERT INTO tenants (id, slug, name, tier, status) VALUES ($1, $2, 'x', "
                              "'dedicated', 'provisioning')", tenant_id, f"t{tenant_id.hex[:12]}")
        if server_id is not None:
            await catalog.execute("INSERT INTO placements (tenant_id, server_id, database_name, role_name) "
                                  "VALUES ($1, $2, $3, $3)", tenant_id, server_id, f"tp_{tenant_id.hex}")
        await catalog.execute("INSERT INTO operations (id, kind, tenant_id, state, created_at) "
                              "VALUES ($1, 'create_tenant', $2, 'queued', clock_timestamp())", op_id, tenant_id)
        ops.append(op_id)
    return ops


@pytest.fixture
async def worker(catalog, pg) -> AsyncIterator[Worker]:
    """A worker whose claimed operations stay claimed (they never run) until the test ends them."""
    w = Worker(WorkerConfig(catalog_dsn=pg.dsn(CATALOG), secret_key=SECRET_KEY, concurrency=2))
    w._catalog = catalog
    w.ended = {}  # op id -> event that ends its (pretend) run
    started: list[asyncio.Task] = []

    class Tasks:  # what the worker's TaskGroup is to _dispatch
        @staticmethod
        def create_task(coro, name: str) -> asyncio.Task:
            started.append(asyncio.create_task(coro, name=name))
            return started[-1]

    async def pretend_run(op) -> None:
        w.ended[op.id] = asyncio.Event()
        try:
            await w.ended[op.id].wait()
        finally:
            w._finished.append(op.id)

    w._tasks = Tasks()
    w._run_claimed = pretend_run
    try:
        yield w
    finally:
        for event in w.ended.values():
            event.set()
        await asyncio.gather(*started, return_exceptions=True)
        await w._claims.close()


async def claims_pid(worker: Worker) -> int:
    async with worker._claims.connection() as conn:
        return conn.get_server_pid()


async def held_by(conn: asyncpg.Connection, pid: int) -> dict[int, int]:
    """Advisory claim locks a backend holds: hashed id -> how many times (session locks count)."""
    rows = await conn.fetch("SELECT objid::bigint AS k FROM pg_locks WHERE locktype = 'advisory' AND granted "
                            "AND pid = $1 AND classid = $2 AND objsubid = 2", pid, OPERATION)
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["k"]] = counts.get(row["k"], 0) + 1
    return counts


async def key(conn: asyncpg.Connection, op_id: uuid.UUID) -> int:
    return await conn.fetchval("SELECT (hashtext($1)::bigint & 4294967295)", str(op_id))


async def settle(worker: Worker) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_claim_walks_past_what_others_hold_and_takes_nothing_twice(catalog, worker, pg):
    ops = await queue(catalog, 6)
    other = await asyncpg.connect(pg.dsn(CATALOG))  # another worker holding the three oldest
    try:
        for op_id in ops[:3]:
            assert await other.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", OPERATION, str(op_id))
        await worker._dispatch()
        await settle(worker)
        assert set(worker._running) == {ops[3], ops[4]}
        mine = await held_by(other, await claims_pid(worker))
        assert mine == {await key(other, ops[3]): 1, await key(other, ops[4]): 1}

        await worker._dispatch()  # full: nothing more, nothing twice
        assert set(worker._running) == {ops[3], ops[4]}
        assert len(await held_by(other, await claims_pid(worker))) == 2

        worker.ended[ops[3]].set()  # ended (still due, as after an unexpected error): not taken back at once
        await settle(worker)
        await worker._dispatch()
        await settle(worker)
        assert set(worker._running) == {ops[4], ops[5]}
        mine = await held_by(other, await claims_pid(worker))
        assert mine == {await key(other, ops[4]): 1, await key(other, ops[5]): 1}
    finally:
        await other.close()


async def test_the_claim_keeps_to_a_share_of_each_server(catalog, worker):
    small = await add_server(catalog, "a-small", 100)
    await catalog.execute("UPDATE database_servers SET capacity_connections = 10 WHERE id = $1", small)  # share 1
    other_server = await add_server(catalog, "b-other", 100)
    on_small = await queue(catalog, 3, small)
    on_other = await queue(catalog, 1, other_server)
    await worker._dispatch()
    await settle(worker)
    assert set(worker._running) == {on_small[0], on_other[0]}  # one on a-small, however many are due there
    lock_count = await catalog.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
                                        await claims_pid(worker))
    assert lock_count == 2  # what went over the share was let go


async def test_reading_a_claim_starts_the_operation_at_its_first_step_not_done(catalog, worker):
    fresh, resumed, done, later = await queue(catalog, 4)
    await catalog.execute("UPDATE operations SET next_attempt_at = now() + interval '1 hour' WHERE id = $1", later)
    names = ["place_tenant", "ensure_template", "create_role", "create_database", "migrate_copy", "harden_database"]
    for op_id, states in ((resumed, ["succeeded", "succeeded", "pending"] + ["pending"] * 3),
                          (done, ["succeeded"] * 6)):
        await catalog.executemany(
            "INSERT INTO operation_steps (operation_id, position, name, state, attempts) VALUES ($1, $2, $3, $4, $5)",
            [(op_id, i, name, state, 2 if i == 2 else 1 if state == "succeeded" else 0)
             for i, (name, state) in enumerate(zip(names, states))])
    got = {op.id: op for op in await worker._start_claimed([fresh, resumed, done, later])}
    assert set(got) == {fresh, resumed, done}  # `later` is not due: not started, its claim let go
    assert (got[fresh].first_step, got[fresh].attempts) == (0, 1)
    assert (got[resumed].first_step, got[resumed].attempts) == (2, 3)
    assert got[done].first_step is None
    steps = {(r["operation_id"], r["position"]): r for r in await catalog.fetch(
        "SELECT operation_id, position, name, state, attempts FROM operation_steps")}
    assert [steps[(fresh, i)]["name"] for i in range(6)] == names  # the create pipeline, recorded once
    assert [steps[(fresh, i)]["state"] for i in range(6)] == ["running"] + ["pending"] * 5
    assert [steps[(resumed, i)]["state"] for i in range(6)] == ["succeeded", "succeeded", "running"] + ["pending"] * 3
    states = dict(await catalog.fetch("SELECT id, state FROM operations"))
    assert states[fresh] == states[resumed] == states[done] == "running" and states[later] == "queued"


async def test_a_stopped_worker_ends_its_duties_and_closes_every_connection(catalog, pg):
    await queue(catalog, 1)  # unplaced and no server: its first step fails and waits for a retry
    worker = Worker(WorkerConfig(catalog_dsn=pg.dsn(CATALOG), secret_key=SECRET_KEY, retry_base_seconds=60,
                                 reconcile_interval_seconds=3600))
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    async with catalog.acquire() as conn:
        mine = await conn.fetchval(others, CATALOG)  # this test's own pool
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        for _ in range(100):  # its duties start with it
            if [t for t in asyncio.all_tasks() if t.get_name().startswith("duty: ")]:
                break
            await asyncio.sleep(0.05)
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM operation_steps WHERE state = 'pending' "
                                   "AND error IS NOT NULL"):
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval(others, CATALOG) > mine  # pool, claims and listener are open
        stop.set()
        await asyncio.wait_for(run, 10)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("duty: ", "operation "))]
        for _ in range(50):
            if await conn.fetchval(others, CATALOG) == mine:
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval(others, CATALOG) == mine
