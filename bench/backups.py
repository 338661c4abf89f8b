"""Backups against the stock tools, on one embedded server with one worker process:

- `backup_vs_pg_dump` (<= 1.25): our backup of a dedicated tenant of BACKUP_MB of rows to the local
  folder store (dump + encrypt + write + digest + the read-back check), from the POST until the
  operation ended, over `pg_dump -Fc` of the same database to a file, in the same run;
- `restore_vs_pg_restore` (<= 1.25): our in-place restore of that backup (load, harden, compare,
  switch, drop the old copy) over `pg_restore` of the pg_dump file into an empty database;
- `backup_rss_growth` (<= 1.2): the worker's peak RSS while backing up a tenant of RSS_LARGE_MB over
  that for one of RSS_SMALL_MB (memory flat in tenant size);
- `dedicated_backup_mb_per_s`, `shared_backup_mb_per_s`: heap MB of the tenant's rows over the
  backup's seconds, for the same rows on each tier.

Sizes come from the environment (BENCH_BACKUP_MB, BENCH_RSS_SMALL_MB, BENCH_RSS_LARGE_MB; the issue
asks 200, 100 and 1000), so a small machine can run a scaled-down round.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import psutil  # already a dependency (the supervisor); samples the worker's RSS

from bench.provisioning import admin_api, create_until_active, running_workers
from bench.results import Report, at_most, info
from bench.stack import Stack, bench_stack

BACKUP_MB = int(os.environ.get("BENCH_BACKUP_MB", "200"))
RSS_SMALL_MB = int(os.environ.get("BENCH_RSS_SMALL_MB", "100"))
RSS_LARGE_MB = int(os.environ.get("BENCH_RSS_LARGE_MB", "1000"))
NAME_CHARS = 190
BATCH_ROWS = 50_000
TIMEOUT = 3600.0


async def fill(stack: Stack, database: str, tenant_id: str | None, mb: int) -> tuple[int, float]:
    """Rows in `projects` until its heap is `mb` MB (the tenant's rows only on the shared tier)."""
    conn = await asyncpg.connect(stack.pg.dsn(database))
    try:
        if tenant_id:
            await conn.execute("SELECT set_config('app.tenant_id', $1, false)", tenant_id)
        column, value = ("tenant_id, ", f"'{tenant_id}'::uuid, ") if tenant_id else ("", "")
        insert = (f"INSERT INTO projects ({column}name) SELECT {value}"
                  f"left(i || ' ' || repeat(md5(i::text), 8), {NAME_CHARS}) FROM generate_series($1::int, $2::int) i")
        rows = 0
        while await conn.fetchval("SELECT pg_relation_size('projects')") < mb * 2**20:
            await conn.execute(insert, rows + 1, rows + BATCH_ROWS)
            rows += BATCH_ROWS
        await conn.execute("VACUUM (ANALYZE) projects")
        return rows, await conn.fetchval("SELECT pg_relation_size('projects')") / 2**20
    finally:
        await conn.close()


async def until_done(api: httpx.AsyncClient, op_id: str) -> dict:
    t0 = time.perf_counter()
    while True:
        op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 10})).json()
        if op["state"] in ("succeeded", "failed"):
            if op["state"] != "succeeded":
                raise RuntimeError(f"operation {op_id} failed: {op.get('error')}")
            return op
        if time.perf_counter() - t0 > TIMEOUT:
            raise TimeoutError(f"operation {op_id} still {op['state']}")


class PeakRss:
    """The largest RSS of process `pid` seen while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def backup(api: httpx.AsyncClient, tenant_id: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = await api.post(f"/v1/tenants/{tenant_id}/backups")
    if r.status_code != 202:
        raise RuntimeError(f"POST backups: {r.status_code} {r.text[:300]}")
    await until_done(api, r.json()["operation_id"])
    return time.perf_counter() - t0, r.json()["backup"]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


async def run(report: Report) -> None:
    from contracts.identifiers import SHARED_DATABASE, tenant_database
    from provisioning.backups.dump import find_binaries

    bins = find_binaries()
    async with bench_stack("backups", max_connections=60, capacity_connections=50) as stack:
        root = stack.pg.data_dir.parent
        env = {"BACKUP_STORE_URL": (root / "store").as_uri(), "BACKUP_MASTER_KEY_FILE": str(root / "master.key"),
               "BACKUP_SCHEDULE": "off", "BACKUP_DRILL_INTERVAL": "0", "SPARE_DATABASES": "0"}
        async with running_workers(stack, 1, 2, **env) as workers, admin_api(stack) as api:
            worker_pid = workers.procs[0].pid

            # -- ours against pg_dump and pg_restore, one dedicated tenant --------------------------
            _, body = await create_until_active(api, "bkbig")
            tid = body["tenant"]["id"]
            rows, heap_mb = await fill(stack, tenant_database(tid), None, BACKUP_MB)
            print(f"    {rows:,} rows, {heap_mb:.0f} MB heap", flush=True)
            ours, made = await backup(api, tid)
            with tempfile.TemporaryDirectory(dir=root) as scratch:
                dump_file = Path(scratch) / "tenant.dump"
                theirs = timed([str(bins / "pg_dump"), "-Fc", "-f", str(dump_file), stack.pg.dsn(tenant_database(tid))])
                report.add(at_most("backup_vs_pg_dump", ours / theirs, 1.25, "x",
                                   f"ours {ours:.2f} s, pg_dump -Fc {theirs:.2f} s, {heap_mb:.0f} MB"))
                admin = await asyncpg.connect(stack.pg.dsn())
                try:
                    await admin.execute('CREATE DATABASE "bench_plain" TEMPLATE template0')
                finally:
                    await admin.close()
                plain = timed([str(bins / "pg_restore"), "--no-owner", "--no-privileges", "-d",
                               stack.pg.dsn("bench_plain"), str(dump_file)])
            t0 = time.perf_counter()
            r = await api.post(f"/v1/tenants/{tid}/restore", json={"backup_id": made["id"]})
            await until_done(api, r.json()["operation_id"])
            restored = time.perf_counter() - t0
            report.add(at_most("restore_vs_pg_restore", restored / plain, 1.25, "x",
                               f"ours {restored:.2f} s, pg_restore {plain:.2f} s"))
            report.add(info("dedicated_backup_mb_per_s", heap_mb / ours, "MB/s", f"{heap_mb:.0f} MB in {ours:.2f} s"))

            # -- the same rows on the shared tier ------------------------------------------------------
            _, shared = await create_until_active(api, "bkshared", tier="shared")
            sid = shared["tenant"]["id"]
            _, shared_mb = await fill(stack, SHARED_DATABASE, sid, BACKUP_MB)
            shared_s, _ = await backup(api, sid)
            report.add(info("shared_backup_mb_per_s", shared_mb / shared_s, "MB/s",
                            f"{shared_mb:.0f} MB (the table, its only tenant) in {shared_s:.2f} s"))

            # -- memory flat in tenant size -------------------------------------------------------------
            peaks = []
            for slug, mb in (("bkrsss", RSS_SMALL_MB), ("bkrssl", RSS_LARGE_MB)):
                _, made_body = await create_until_active(api, slug)
                await fill(stack, tenant_database(made_body["tenant"]["id"]), None, mb)
                with PeakRss(worker_pid) as rss:
                    await backup(api, made_body["tenant"]["id"])
                peaks.append(rss.peak / 2**20)
            report.add(at_most("backup_rss_growth", peaks[1] / peaks[0], 1.2, "x",
                               f"worker peak RSS {peaks[0]:.0f} MB at {RSS_SMALL_MB} MB, "
                               f"{peaks[1]:.0f} MB at {RSS_LARGE_MB} MB"))
            await asyncio.sleep(0)
