"""Process commands: the API, a provisioning worker, the demo tenant app, the catalog migrations.
Each reads its settings from the environment."""

from __future__ import annotations

import asyncio
import os
import signal

import click

from control_plane.cli.common import configure_process_logging, load_settings, run_event_loop
from tenant_router.http_limits import HeaderLimits, HttpLimits


@click.command("migrate-catalog")
def migrate_catalog() -> None:
    """Apply the catalog migrations (idempotent). Reads CATALOG_DATABASE_URL, SECRET_KEY, ADMIN_TOKEN."""
    from migrations import runner

    settings = load_settings()
    try:
        runner.upgrade_sync("catalog", settings.catalog_database_url)
    except OSError as exc:  # refused, unknown host, timed out: the setting to check, not a traceback
        raise click.ClickException(f"cannot reach the catalog database (CATALOG_DATABASE_URL): {exc}") from None
    click.echo("catalog at " + runner.head("catalog"))


def http_limits() -> HttpLimits:
    """Header size and count, header and body timeouts, keep-alive: tenant_router/http_limits.py."""
    try:
        return HttpLimits.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
def api() -> None:
    """Run the control-plane HTTP API. Reads CATALOG_DATABASE_URL, SECRET_KEY, ADMIN_TOKEN, REDIS_URL,
    API_HOST, API_PORT, STRIPE_*, BACKUP_*, HTTP_* and the other settings the README lists."""
    import uvicorn

    from control_plane.api.app import create_app

    level = configure_process_logging()
    settings = load_settings()
    limits = http_limits()
    # uvicorn's loggers go to the root handler (log_config=None); our access line replaces uvicorn's.
    # X-Forwarded-For only when FORWARDED_ALLOW_IPS names the proxies: uvicorn trusts loopback by
    # default, so every local client could pick its own address and escape the failed-login throttle.
    uvicorn.run(HeaderLimits(create_app(settings), limits), host=settings.api_host, port=settings.api_port,
                log_level=level, log_config=None, access_log=False, proxy_headers="FORWARDED_ALLOW_IPS" in os.environ,
                **limits.uvicorn_options())


@click.command()
def app() -> None:
    """Run the demo tenant application (routed by tenant_router). Reads CATALOG_DATABASE_URL (a
    read-only login will do), ROUTER_KEY or SECRET_KEY, REDIS_URL, TENANT_APEX, TENANT_JWT_*,
    ROUTER_*, API_HOST, APP_PORT, HTTP_*."""
    import uvicorn

    from demo_app.app import create_app
    from tenant_router.config import RouterConfig

    level = configure_process_logging()
    # the router's settings only (RouterConfig.from_env): ROUTER_KEY and a read-only catalog URL do,
    # no SECRET_KEY or ADMIN_TOKEN needed here
    try:
        config = RouterConfig.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        port = int(os.environ.get("APP_PORT") or 8001)
    except ValueError:
        raise click.ClickException("APP_PORT must be a port number") from None
    limits = http_limits()
    uvicorn.run(HeaderLimits(create_app(config), limits), host=os.environ.get("API_HOST") or "127.0.0.1",
                port=port, log_level=level, log_config=None, access_log=False, **limits.uvicorn_options())


@click.command()
def worker() -> None:
    """Run a provisioning worker (and, with BILLING_APPLY_IN=worker, the billing event applier;
    with STRIPE_API_KEY, erasures delete the tenant's Stripe customer; with DOMAIN_VERIFICATION=dns,
    the re-check of pending custom domains).
    Reads CATALOG_DATABASE_URL, SECRET_KEY, REDIS_URL, WORKER_*, STEP_*, BACKUP_*, EVENTS_*, DUNNING_*,
    BILLING_*, *_RETENTION_DAYS, RECONCILE_INTERVAL_SECONDS and the rest the README lists."""
    from control_plane.billing.customer_erasure import CustomerErasure
    from control_plane.billing.worker_side import WorkerApplier
    from control_plane.services.domain_checks import WorkerDomainChecks
    from provisioning.duties import Duty
    from provisioning.worker import Worker

    configure_process_logging()
    settings = load_settings()
    config = settings.worker_config()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # composed here: the provisioner imports nothing of the control plane (import-linter)
        customers = CustomerErasure(settings) if settings.stripe_api_key else None  # erasure's Stripe step
        billing = WorkerApplier(settings) if settings.billing_apply_in == "worker" else None
        domain_checks = (WorkerDomainChecks(settings) if settings.domain_verification == "dns"
                         and settings.domain_verification_interval_seconds > 0 else None)
        duties = [Duty("the billing event applier", billing.run)] if billing is not None else []
        if domain_checks is not None:
            duties.append(Duty("the pending domain re-check", domain_checks.run))
        try:
            await Worker(config, extra_duties=duties, wakes=billing.wakes if billing is not None else None,
                         customers=customers).run(stop)
        finally:
            if domain_checks is not None:
                await domain_checks.close()
            if billing is not None:
                await billing.close()
            if customers is not None:
                await customers.close()

    from provisioning.tree_check import TenantTreeMismatch

    try:
        run_event_loop(run())
    except TenantTreeMismatch as exc:  # a setting to fix, not a crash: the message, exit 1
        raise click.ClickException(str(exc)) from None


COMMANDS = (migrate_catalog, api, app, worker)
