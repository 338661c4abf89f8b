"""tenantctl: the admin CLI (click).

Admin commands talk to the control-plane API with an admin key (client.py: TENANTPLANE_URL and
TENANTPLANE_TOKEN, or the ./.data/cli.json `tenantctl dev` writes), so they work wherever the product
runs and need no database credentials:

    tenantctl tenants create|list|show|suspend|resume|move|delete|erase|erasure
    tenantctl tenants plan|members|member-set|member-remove|domains|domain-add|domain-verify|domain-remove
    tenantctl tenants features|feature-set|feature-clear   (tenant_settings.py)
    tenantctl operations list|show|wait|retry|cancel
    tenantctl events list|redeliver   lifecycle events and their webhook delivery
    tenantctl migrate            start a fleet migration and follow it; migrations start|list|show
    tenantctl servers register|list|cordon|uncordon|drain   (register-server: the same as servers register)
    tenantctl plans list|show|set|delete · users list|create · keys create|list|revoke
    tenantctl reconcile · overview · audit
    tenantctl backup create|list|restore|verify · backup keys rewrap
                                 (backup export decrypts here: direct catalog access)
    tenantctl billing sync       apply the Stripe events webhooks missed; cancel deleted tenants' subscriptions

Every admin command takes --json. The `tenantctl` script enters through control_plane/tenantctl.py,
which names the missing extra in a router-only install. Process commands read their settings from
the environment and open the catalog themselves:

    tenantctl dev               start everything on embedded defaults (what `make run` does)
    tenantctl api | worker | app   run one process
    tenantctl migrate-catalog   apply the catalog's Alembic migrations
    tenantctl each -- CMD       run a command once per tenant (TENANT_ID, TENANT_SLUG in its environment)
    tenantctl router-key | catalog-reader   what routers get instead of SECRET_KEY and the catalog's login

Shell completion (click's): `eval "$(_TENANTCTL_COMPLETE=bash_source tenantctl)"` in ~/.bashrc
(zsh_source, fish_source for those shells).
"""

from __future__ import annotations

import click

from control_plane.cli import (
    access,
    backups,
    billing,
    dev,
    each,
    events,
    fleet,
    migrations,
    operations,
    processes,
    router_access,
    servers,
    tenant_settings,  # noqa: F401 (its commands join the tenants, plans and users groups)
    tenants,
)


@click.group(epilog="Shell completion: eval \"$(_TENANTCTL_COMPLETE=bash_source tenantctl)\" "
                    "(zsh_source, fish_source for zsh and fish).")
@click.version_option(package_name="tenantplane", prog_name="tenantctl")  # the installed distribution's version
def main() -> None:
    """tenantplane: database-per-tenant routing control plane.

    Admin commands talk to the control-plane API: set TENANTPLANE_URL and TENANTPLANE_TOKEN, or run them
    next to `make run` (it leaves both in ./.data/cli.json). Process commands (api, worker, app, dev,
    migrate-catalog, each, router-key, catalog-reader) read the product's settings from the environment."""


for module in (tenants, operations, events, migrations, servers, access, fleet, backups, billing, each, processes,
               router_access):
    for command in module.COMMANDS:
        main.add_command(command)
main.add_command(dev.dev)
