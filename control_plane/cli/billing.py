"""`tenantctl billing sync` over the admin API (a key with the `billing` scope): catch up with Stripe
(the events since the last checkpoint, applied once each; Stripe keeps 30 days) and cancel what
deleted tenants still owe Stripe. The API holds the Stripe key; the CLI needs none."""

from __future__ import annotations

import click

from control_plane.cli.output import api_command, call, emit


@click.group()
def billing() -> None:
    """Stripe billing."""


def _report(report: dict) -> None:
    click.echo(f"since {report['since']}: {report['listed']} listed, {report['recorded']} recorded, "
               f"{report['duplicates']} already known, {report['invalid']} invalid")
    click.echo(f"checkpoint: {report['checkpoint'] or 'none'}")
    click.echo(f"subscriptions of deleted tenants cancelled: {report['subscriptions_cancelled']}")


@api_command(billing)
def sync(as_json: bool) -> None:
    """Apply the Stripe events the webhooks missed; cancel deleted tenants' subscriptions."""
    emit(call("POST", "/v1/billing/sync"), as_json, _report)


COMMANDS = (billing,)
