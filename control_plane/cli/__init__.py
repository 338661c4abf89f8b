"""tenantctl: the admin CLI (click).

    tenantctl dev               start everything on embedded defaults (what `make run` does)
    tenantctl api | worker | app   run one process (settings from the environment)
    tenantctl migrate-catalog   apply the catalog's Alembic migrations
    tenantctl register-server   register a database server by admin DSN
    tenantctl migrate | reconcile   fleet migrations and the reconciler's report
    tenantctl each -- CMD       run a command once per tenant (TENANT_ID, TENANT_SLUG in its environment)
    tenantctl billing sync      apply the Stripe events webhooks missed; cancel deleted tenants' subscriptions
    tenantctl router-key | catalog-reader   what routers get instead of SECRET_KEY and the catalog's login

Admin commands are in `admin.py` (billing's in `billing.py`), process commands in `processes.py`, the dev stack in `dev.py`.
"""

from __future__ import annotations

import click

from control_plane.cli import admin, backups, billing, dev, each, processes, router_access


@click.group()
@click.version_option(package_name="tenantplane", prog_name="tenantctl")  # the installed distribution's version
def main() -> None:
    """tenantplane: database-per-tenant routing control plane."""


for command in (*admin.COMMANDS, *backups.COMMANDS, *billing.COMMANDS, *each.COMMANDS, *processes.COMMANDS,
                *router_access.COMMANDS, dev.dev):
    main.add_command(command)
