"""`tenantctl each -- <command>`: run a command once per tenant, as django-tenants'
`all_tenants_command` and stancl's `tenants:run` do.

The command gets the tenant in `TENANT_ID`, `TENANT_SLUG` and `TENANT_TIER` (no credentials: it
reaches the tenant's data through `tenant_router.jobs.tenant_context(os.environ["TENANT_ID"])`, which
binds the transaction as the router does), at most `--per-server` at once on any database server.
Each tenant's output is printed whole when its command ends; the exit status is 1 if any failed.
"""

from __future__ import annotations

import asyncio
import os

import click

from control_plane.cli.common import run_event_loop


async def _each(argv: tuple[str, ...], tenants: tuple[str, ...], per_server: int, include_suspended: bool) -> int:
    from contracts.placement import Placement
    from tenant_router.config import RouterConfig
    from tenant_router.jobs import fleet, run_per_server, started_router

    async def run(placement: Placement) -> int:
        env = {**os.environ, "TENANT_ID": str(placement.tenant_id), "TENANT_SLUG": placement.slug,
               "TENANT_TIER": placement.tier.value}
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        output, _ = await proc.communicate()
        for line in output.decode(errors="replace").splitlines():
            click.echo(f"[{placement.slug}] {line}")
        if proc.returncode:
            raise RuntimeError(f"exit status {proc.returncode}")
        return 0

    try:
        config = RouterConfig.from_env()
    except ValueError as exc:  # a missing or malformed setting, named by its variable
        raise click.ClickException(str(exc)) from None
    async with started_router(config) as router:
        chosen, refused = await fleet(router, tenants or None, include_suspended=include_suspended)
        outcomes = refused + await run_per_server(chosen, run, per_server)
    failed = [o for o in outcomes if not o.ok]
    for outcome in sorted(outcomes, key=lambda o: o.slug):
        click.echo(f"{outcome.slug}: {'ok' if outcome.ok else 'FAILED (' + str(outcome.error) + ')'}")
    click.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} tenants ok")
    return 1 if failed else 0


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--tenant", "tenants", multiple=True, help="a slug or id (repeat); default: every active tenant")
@click.option("--per-server", type=click.IntRange(min=1), default=4, show_default=True,
              help="commands at once per database server")
@click.option("--include-suspended", is_flag=True, help="run for suspended tenants too")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def each(argv: tuple[str, ...], tenants: tuple[str, ...], per_server: int, include_suspended: bool) -> None:
    """Run a command once per tenant: tenantctl each [--tenant SLUG ...] -- COMMAND [ARGS]...

    Reads the router's settings: CATALOG_DATABASE_URL (a read-only login will do), ROUTER_KEY or
    SECRET_KEY, REDIS_URL, ROUTER_*. The command gets TENANT_ID, TENANT_SLUG and TENANT_TIER."""
    raise SystemExit(run_event_loop(_each(argv, tenants, per_server, include_suspended)))


COMMANDS = (each,)
