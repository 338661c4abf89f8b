"""`tenantctl billing sync`: catch up with Stripe (the events since the last checkpoint, applied
once each; Stripe keeps 30 days) and cancel what deleted tenants still owe Stripe, in this process
on a catalog engine of its own. Changes are announced to routers as the API announces them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import click

from control_plane.cli.common import load_settings

if TYPE_CHECKING:
    from control_plane.billing.sync import SyncReport
    from control_plane.settings import Settings


@click.group()
def billing() -> None:
    """Stripe billing."""


@billing.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def sync(as_json: bool) -> None:
    """Apply the Stripe events the webhooks missed; cancel deleted tenants' subscriptions."""
    import msgspec

    from control_plane.errors import ControlPlaneError

    try:
        report = asyncio.run(run_sync(load_settings()))
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    click.echo(f"since {report.since.isoformat()}: {report.listed} listed, {report.recorded} recorded, "
               f"{report.duplicates} already known, {report.invalid} invalid")
    click.echo(f"checkpoint: {report.checkpoint.isoformat() if report.checkpoint else 'none'}")
    click.echo(f"subscriptions of deleted tenants cancelled: {report.subscriptions_cancelled}")


async def run_sync(settings: Settings) -> SyncReport:
    from control_plane.billing import wiring
    from control_plane.catalog.db import create_engine, sessionmaker

    engine = create_engine(settings.catalog_database_url, pool_size=2)
    redis = None
    if settings.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
    services = wiring.build(settings, sessionmaker(engine), redis)
    try:
        return await services.sync.run()
    finally:
        await services.close()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


COMMANDS = (billing,)
