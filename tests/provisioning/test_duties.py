"""A worker's duties: supervise() starts a dead duty again or lets it be, as declared, and logs the
death; a duty that returns is done. Which duties a worker declares follows its config."""

from __future__ import annotations

import asyncio
import logging

from provisioning import duties
from provisioning.config import WorkerConfig


async def test_a_duty_that_dies_is_started_again_after_a_pause(caplog):
    starts = []

    async def flaky() -> None:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) < 3:
            raise RuntimeError("lost the catalog")

    with caplog.at_level(logging.ERROR, logger="tenantplane.worker"):
        await asyncio.wait_for(duties.supervise("flaky", flaky, restart=True, delay=0.05), 5)
    assert len(starts) == 3 and all(b - a >= 0.05 for a, b in zip(starts, starts[1:]))
    deaths = [r for r in caplog.records if r.getMessage().startswith("flaky died")]
    assert len(deaths) == 2 and all(r.exc_info for r in deaths)


async def test_a_duty_declared_once_is_left_after_its_death(caplog):
    starts = []

    async def once() -> None:
        starts.append(1)
        raise RuntimeError("no scripts")

    with caplog.at_level(logging.ERROR, logger="tenantplane.worker"):
        await asyncio.wait_for(duties.supervise("once", once, restart=False, delay=0), 5)
    assert starts == [1]
    assert [r.getMessage() for r in caplog.records] == ["once died"]


async def test_a_supervised_duty_is_cancelled_with_its_group():
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(duties.supervise("forever", forever))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()


def test_the_declared_duties_follow_the_config():
    def names(**config: object) -> list[str]:
        cfg = WorkerConfig(catalog_dsn="postgresql://x/y", secret_key="k" * 32, **config)
        return [(d.name, d.restart) for d in duties.worker_duties(cfg, None, None, asyncio.Event())]

    assert names() == [("rendering the newest tenant revision", False), ("the scheduled reconciler", True),
                       ("the login watch", True), ("the spare refill", True), ("the billing duties", True),
                       ("scheduled backups", True), ("scheduled restore drills", True), ("retention", True)]
    assert names(reconcile_interval_seconds=0, spare_databases=0, billing_interval_seconds=0,
                 backup_schedule=None, backup_drill_interval=0, retention_interval_seconds=0,
                 login_check_interval_seconds=0) == [
        ("rendering the newest tenant revision", False), ("scheduled backups", True)]  # plans may schedule


def test_a_worker_with_metrics_keeps_the_queue_depth_gauge():
    from provisioning.metrics import WorkerMetrics

    cfg = WorkerConfig(catalog_dsn="postgresql://x/y", secret_key="k" * 32)
    declared = [d.name for d in duties.worker_duties(cfg, None, None, asyncio.Event(), metrics=WorkerMetrics())]
    assert "the queue depth gauge" in declared
