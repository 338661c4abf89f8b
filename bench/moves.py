"""move_write_pause_s: how long a tenant's writes are paused while it moves from the shared tier to
a database of its own.

One server, one provisioning worker process, the control-plane app in this process. A shared-tier
tenant gets TARGET_HEAP_MB of rows in its `projects` table (inserted directly into `tp_shared` as
the server's admin with `generate_series`, `tenant_id` set; names padded to NAME_CHARS characters
so the rows have a realistic width), a neighbour on the same tier gets NEIGHBOUR_ROWS rows (which
must stay behind), the table is vacuumed and analyzed, and then `POST /v1/tenants/{id}/move
{"tier": "dedicated"}` moves it.

- `move_write_pause_s` (smaller is better): the operation's params `resumed_at - paused_at`, both
  written by provisioning/moves.py (`pause_writes`, `switch_placement`);
- `move_total_s`: the operation's `finished_at - created_at` (catalog clock), from the request to the
  old copy removed;
- `move_verified_rows`: the row count `verify_copy` recorded for `projects` (checked against the
  rows inserted plus the rows the write probe got in before the pause, and counted again in the new
  database).

Meanwhile the demo app (the tenant router, in this process) tries one write (`POST /api/projects`)
every PROBE_SECONDS for the tenant: `move_write_503_s` is the span from its first to its last 503,
the pause as a client sees it (within PROBE_SECONDS). Per-step durations are printed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import httpx

from bench.apps import routed_app
from bench.load import asgi_client
from bench.provisioning import admin_api, create_until_active, running_workers
from bench.results import Report, info
from bench.stack import Stack, bench_stack

TARGET_HEAP_MB = 50
NAME_CHARS = 190
BATCH_ROWS = 50_000
NEIGHBOUR_ROWS = 1_000
PROBE_SECONDS = 0.05
MOVE_TIMEOUT = 600.0


async def fill(stack: Stack, tenant_id: str, neighbour_id: str) -> tuple[int, float, float]:
    """(rows inserted for the tenant, heap MB, heap + indexes MB of the whole table)."""
    from contracts.identifiers import SHARED_DATABASE

    conn = await asyncpg.connect(stack.pg.dsn(SHARED_DATABASE))
    try:
        insert = ("INSERT INTO projects (tenant_id, name) SELECT $1::uuid, "
                  f"left(i || ' ' || repeat(md5(i::text), 8), {NAME_CHARS}) FROM generate_series($2::int, $3::int) i")
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", neighbour_id)
        await conn.execute(insert, neighbour_id, 1, NEIGHBOUR_ROWS)
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", tenant_id)
        rows = 0
        while await conn.fetchval("SELECT pg_relation_size('projects')") < TARGET_HEAP_MB * 1024 * 1024:
            await conn.execute(insert, tenant_id, rows + 1, rows + BATCH_ROWS)
            rows += BATCH_ROWS
        await conn.execute("VACUUM (ANALYZE) projects")
        heap, total = await conn.fetchrow(
            "SELECT pg_relation_size('projects'), pg_total_relation_size('projects')")
        return rows, heap / 2**20, total / 2**20
    finally:
        await conn.close()


async def write_probe(client: httpx.AsyncClient, host: str, stop: asyncio.Event,
                      seen: dict[str, list[float]]) -> None:
    """One write every PROBE_SECONDS; the times of the answers by status (as strings)."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            r = await client.post("/api/projects", json={"name": f"probe {i}"}, headers={"host": host})
            key = str(r.status_code)
        except Exception as exc:  # noqa: BLE001 - counted by type, never fatal to the benchmark
            key = type(exc).__name__
        seen.setdefault(key, []).append(time.perf_counter())
        try:
            await asyncio.wait_for(stop.wait(), PROBE_SECONDS)
        except TimeoutError:
            pass


async def run(report: Report) -> None:
    async with bench_stack("moves", max_connections=100, capacity_connections=90) as stack:
        async with running_workers(stack, 1, 4), admin_api(stack) as api:
            _, body = await create_until_active(api, "mvbig", tier="shared")
            _, neighbour = await create_until_active(api, "mvsmall", tier="shared")
            tenant_id, neighbour_id = body["tenant"]["id"], neighbour["tenant"]["id"]
            t0 = time.perf_counter()
            rows, heap_mb, total_mb = await fill(stack, tenant_id, neighbour_id)
            print(f"    {rows:,} rows for the tenant ({heap_mb:.1f} MB heap, {total_mb:.1f} MB with the "
                  f"primary key, table shared with {NEIGHBOUR_ROWS:,} rows of a neighbour), filled in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)

            seen: dict[str, list[float]] = {}
            stop = asyncio.Event()
            async with asgi_client(routed_app(stack.router_config())) as app:
                probe = asyncio.create_task(write_probe(app, "mvbig.localhost", stop, seen))
                await asyncio.sleep(1.0)  # the probe is writing before the move starts
                t_move = time.perf_counter()
                r = await api.post(f"/v1/tenants/{tenant_id}/move", json={"tier": "dedicated"})
                if r.status_code != 202:
                    raise RuntimeError(f"POST move: {r.status_code} {r.text[:300]}")
                op_id = r.json()["operation_id"]
                while True:
                    op = (await api.get(f"/v1/operations/{op_id}")).json()
                    if op["state"] in ("succeeded", "failed"):
                        break
                    if time.perf_counter() - t_move > MOVE_TIMEOUT:
                        raise TimeoutError(f"the move is still {op['state']} after {MOVE_TIMEOUT:.0f} s")
                    await asyncio.sleep(0.1)
                observed = time.perf_counter() - t_move
                await asyncio.sleep(1.0)  # writes after the move
                stop.set()
                await probe
            if op["state"] != "succeeded":
                raise RuntimeError(f"the move failed: {op.get('error')}")
            tenant = (await api.get(f"/v1/tenants/{tenant_id}")).json()

        catalog = await asyncpg.connect(stack.catalog_dsn)
        try:
            row = await catalog.fetchrow(
                "SELECT params, extract(epoch FROM finished_at - created_at) AS total FROM operations "
                "WHERE id = $1", uuid.UUID(op_id))
            steps = await catalog.fetch(
                "SELECT name, extract(epoch FROM finished_at - started_at) AS s, attempts FROM operation_steps "
                "WHERE operation_id = $1 ORDER BY position", uuid.UUID(op_id))
            database = await catalog.fetchval("SELECT database_name FROM placements WHERE tenant_id = $1",
                                              uuid.UUID(tenant_id))
        finally:
            await catalog.close()
        target = await asyncpg.connect(stack.pg.dsn(database))
        try:
            in_target = await target.fetchval("SELECT count(*) FROM projects")
        finally:
            await target.close()
        shared = await asyncpg.connect(stack.pg.dsn("tp_shared"))
        try:
            left = await shared.fetch("SELECT tenant_id::text, count(*) AS n FROM projects GROUP BY 1")
        finally:
            await shared.close()

    params = row["params"] if isinstance(row["params"], dict) else json.loads(row["params"])
    pause = params["resumed_at"] - params["paused_at"]
    verified = params.get("verified", {}).get("projects")
    refused = seen.get("503", [])
    written = seen.get("201", [])
    # the probe's writes before the pause are part of the copy; those after the switch land in the new
    # database only
    before = [t for t in written if t < (refused[0] if refused else t_move)]
    after = [t for t in written if refused and t > refused[-1]]
    others = {k: len(v) for k, v in seen.items() if k not in ("201", "503")}
    print("    steps (s): " + ", ".join(f"{s['name']} {float(s['s']):.2f}" + (f" ({s['attempts']} attempts)"
                                                                           if s["attempts"] > 1 else "")
                                      for s in steps), flush=True)
    print(f"    tenant now {tenant['tier']} / {tenant['status']}; rows verified {verified:,} (inserted "
          f"{rows:,} + {len(before)} probe writes before the pause), {in_target:,} in {database} after "
          f"{len(after)} more probe writes; left in tp_shared: "
          f"{ {('neighbour' if t == neighbour_id else t): n for t, n in ((r['tenant_id'], r['n']) for r in left)} }; "
          f"write probe: {len(written)} written, {len(refused)} refused (503)"
          + (f", other answers {others}" if others else ""), flush=True)
    if verified != rows + len(before) or in_target != verified + len(after):
        print("    WARNING: the row counts do not add up (see the line above)", flush=True)
    report.add(info("move_write_pause_s", round(pause, 2), "s",
                    f"smaller is better; params resumed_at - paused_at, shared -> dedicated, {rows:,} rows "
                    f"({heap_mb:.0f} MB heap)"))
    report.add(info("move_total_s", round(float(row["total"]), 2), "s",
                    f"operation created -> finished (old copy removed); {observed:.1f} s seen by polling"))
    report.add(info("move_verified_rows", verified, "rows", f"{in_target:,} counted in the new database"))
    report.add(info("move_write_503_s", round(refused[-1] - refused[0], 2) if refused else None, "s",
                    f"first to last 503 of a write every {PROBE_SECONDS * 1000:.0f} ms through the router"))
