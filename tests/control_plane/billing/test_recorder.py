"""The webhook's write: a burst of new events wakes the appliers once, after its rows are
committed; a second delivery wakes nobody."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import asyncpg

from contracts.channels import BILLING_EVENTS_CHANNEL
from control_plane.billing import recorder as recorder_module
from control_plane.billing.recorder import EventRecorder
from control_plane.settings import Settings


async def test_a_burst_of_events_wakes_the_appliers_once_after_its_rows_are_committed(billing_settings: Settings):
    dsn = billing_settings.catalog_database_url
    listener = await asyncpg.connect(dsn)
    wakes: list[int] = []  # how many of the burst's rows the listener could read at each wake
    ids = [f"evt_rec_{uuid.uuid4().hex}" for _ in range(30)]
    woken = asyncio.Event()

    async def on_wake(*_args) -> None:
        wakes.append(await reader.fetchval("SELECT count(*) FROM billing_events WHERE id = ANY($1)", ids))
        woken.set()

    reader = await asyncpg.connect(dsn)
    await listener.add_listener(BILLING_EVENTS_CHANNEL, lambda *a: asyncio.ensure_future(on_wake(*a)))
    recorder = EventRecorder(dsn, connect_timeout=5, statement_timeout=5)
    try:
        now = dt.datetime.now(dt.UTC)
        results = await asyncio.gather(*(
            recorder.record(i, "invoice.paid", now, json.dumps({"id": i})) for i in ids))
        assert all(inserted for inserted, _ in results)
        await asyncio.wait_for(woken.wait(), 5)
        await asyncio.sleep(recorder_module.WAKE_EVERY_SECONDS * 4)
        assert 1 <= len(wakes) <= 3, wakes  # one per interval, not one per event
        assert wakes[-1] == len(ids)  # the last wake came after every row was committed
        count = len(wakes)
        again = await recorder.record(ids[0], "invoice.paid", now, json.dumps({"id": ids[0]}))
        assert again[0] is False
        await asyncio.sleep(recorder_module.WAKE_EVERY_SECONDS * 4)
        assert len(wakes) == count  # a duplicate delivery wakes nobody
        assert await reader.fetchval("SELECT deliveries FROM billing_events WHERE id = $1", ids[0]) == 2
    finally:
        await recorder.close()
        await listener.close()
        await reader.close()
        admin = await asyncpg.connect(dsn)
        await admin.execute("DELETE FROM billing_events WHERE id = ANY($1)", ids)
        await admin.close()
