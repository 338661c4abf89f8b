"""tenantctl: the admin CLI (click).

    tenantctl dev               start everything on embedded defaults (what `make run` does)
    tenantctl api | worker | app   run one process (settings from the environment)
    tenantctl migrate-catalog   apply the catalog's Alembic migrations
    tenantctl register-server   register a database server by admin DSN
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from control_plane.settings import Settings, SettingsError


def run_event_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run(main)` on uvloop (libuv's loop, written in C) where it is installed, as it is
    everywhere but Windows: a worker spends much of its CPU in the event loop's socket handling
    (a fleet migration opens one connection per tenant database), and uvloop roughly halves that.
    uvicorn picks uvloop by itself for the API and the tenant app."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _logging() -> str:
    """structlog for every log line (LOG_FORMAT=json for JSON lines); returns uvicorn's log level."""
    from tenant_router.observability import configure_logging

    level = os.environ.get("LOG_LEVEL", "INFO")
    try:
        configure_logging(level, json=os.environ.get("LOG_FORMAT", "").strip().lower() == "json")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return level.strip().lower()


@click.group()
def main() -> None:
    """tenantplane: database-per-tenant routing control plane."""


@main.command("migrate-catalog")
def migrate_catalog() -> None:
    """Apply the catalog migrations (idempotent)."""
    from migrations import runner

    runner.upgrade_sync("catalog", _settings().catalog_database_url)
    click.echo("catalog at " + runner.head("catalog"))


@main.command("register-server")
@click.option("--name", required=True)
@click.option("--dsn", required=True, help="admin DSN: postgresql://user:password@host:port/db")
@click.option("--capacity-databases", default=500, show_default=True)
@click.option("--capacity-connections", default=100, show_default=True)
@click.option("--replace", is_flag=True, help="update the server if the name is taken")
def register_server(name: str, dsn: str, capacity_databases: int, capacity_connections: int, replace: bool) -> None:
    """Register a database server tenants can be placed on."""
    from control_plane.errors import ControlPlaneError

    try:
        out = asyncio.run(_register(_settings(), name, dsn, capacity_databases, capacity_connections, replace))
    except ControlPlaneError as exc:
        raise click.ClickException(f"{exc.code}: {exc.detail}") from None
    click.echo(f"registered {out.name} ({out.dsn})")


async def _register(settings: Settings, name: str, dsn: str, capacity_databases: int,
                    capacity_connections: int, replace: bool):
    from control_plane.catalog.db import create_engine, sessionmaker
    from control_plane.schemas import RegisterServer
    from control_plane.services.servers import ServerService
    from provisioning.sealing import SecretBox

    engine = create_engine(settings.catalog_database_url, pool_size=1)
    try:
        service = ServerService(sessionmaker(engine), SecretBox(settings.secret_key))
        body = RegisterServer(name=name, dsn=dsn, capacity_databases=capacity_databases,
                              capacity_connections=capacity_connections)
        return await service.register("cli", body, replace=replace)
    finally:
        await engine.dispose()


@main.command()
def api() -> None:
    """Run the control-plane HTTP API."""
    import uvicorn

    from control_plane.api.app import create_app

    level = _logging()
    settings = _settings()
    # uvicorn's loggers go to the root handler (log_config=None); our access line replaces uvicorn's.
    # X-Forwarded-For only when FORWARDED_ALLOW_IPS names the proxies: uvicorn trusts loopback by
    # default, so every local client could pick its own address and escape the failed-login throttle.
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level=level,
                log_config=None, access_log=False, proxy_headers="FORWARDED_ALLOW_IPS" in os.environ)


@main.command()
def app() -> None:
    """Run the demo tenant application (routed by tenant_router)."""
    import uvicorn

    from demo_app.app import create_app
    from tenant_router.config import RouterConfig

    level = _logging()
    settings = _settings()
    uvicorn.run(create_app(RouterConfig.from_env()), host=settings.api_host, port=settings.app_port,
                log_level=level, log_config=None, access_log=False)


@main.command()
def worker() -> None:
    """Run a provisioning worker."""
    from provisioning.worker import Worker, WorkerConfig

    _logging()
    s = _settings()
    config = WorkerConfig(
        catalog_dsn=s.catalog_database_url, secret_key=s.secret_key, redis_url=s.redis_url,
        poll_interval=s.worker_poll_interval, concurrency=s.worker_concurrency, max_attempts=s.step_max_attempts,
        retry_base_seconds=s.step_retry_base_seconds, pause_before_step=s.worker_pause_before_step,
        reconcile_interval_seconds=s.reconcile_interval_seconds, spare_databases=s.spare_databases,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Worker(config).run(stop)

    run_event_loop(run())


@main.command()
@click.option("--to", "target", default="head", show_default=True, help="target tenant revision")
@click.option("--tenant", "tenants", multiple=True, help="a tenant id or slug (repeat); default: every tenant")
@click.option("--canary", default=5, show_default=True, help="tenants in the canary wave")
@click.option("--wave-size", default=50, show_default=True)
@click.option("--halt-on-error", is_flag=True, help="stop after a wave in which a tenant failed")
@click.option("--no-wait", is_flag=True, help="start the run and print its id")
def migrate(target: str, tenants: tuple[str, ...], canary: int, wave_size: int, halt_on_error: bool,
            no_wait: bool) -> None:
    """Migrate the fleet (workers do the work; this follows progress and prints a report)."""
    import msgspec

    from control_plane.errors import ControlPlaneError
    from control_plane.schemas import StartMigration
    from control_plane.services.migrations import MigrationService

    s = _settings()
    service = MigrationService(s.catalog_database_url)
    try:
        body = msgspec.convert({"target": target, "tenants": list(tenants) or None, "canary": canary,
                                "wave_size": wave_size, "halt_on_error": halt_on_error}, StartMigration)
        run = asyncio.run(service.start("cli", body))
    except (ControlPlaneError, msgspec.ValidationError) as exc:
        raise click.ClickException(getattr(exc, "detail", str(exc))) from None
    click.echo(f"migration run {run.id}: {len(run.tenants)} tenant(s) to {run.target_revision}")
    if no_wait:
        return
    total = len(run.tenants)
    with click.progressbar(length=total, label="migrating", show_pos=True) as bar:
        done = 0
        while True:
            run = asyncio.run(service.get(str(run.id)))
            now_done = sum(run.counts[k] for k in ("succeeded", "failed", "skipped"))
            bar.update(now_done - done)
            done = now_done
            if run.state != "running":
                break
            time.sleep(0.5)
    for t in run.tenants:
        click.echo(f"{t.slug:40} wave {t.wave:<3} {t.state:10} {t.from_revision or '-':>8} -> "
                   f"{t.to_revision or '-':8} {t.error or ''}")
    click.echo(f"{run.state}: " + ", ".join(f"{k} {v}" for k, v in run.counts.items() if v))
    if run.state != "succeeded":
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def reconcile(as_json: bool) -> None:
    """Compare the catalog with every server and report drift and orphans (drops nothing)."""
    import msgspec

    from control_plane.api.controllers.reconciliation import ReconciliationService
    from provisioning.sealing import SecretBox

    s = _settings()
    report = asyncio.run(ReconciliationService(s.catalog_database_url, SecretBox(s.secret_key)).run())
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    click.echo(f"servers checked: {', '.join(report.servers_checked) or 'none'}")
    if report.unreachable:
        click.echo(f"unreachable: {', '.join(report.unreachable)}")
    for f in report.findings:
        click.echo(f"{f.kind:18} {f.server:16} {f.object:44} {f.tenant_id or '-':36} {f.detail}")
    click.echo(f"{len(report.findings)} finding(s)")
    if report.spares:
        click.echo(f"{len(report.spares)} spare database(s), not counted as findings")


def _kept_secret(path: Path, make) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


async def _ensure_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    from contracts.identifiers import quote

    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {quote(name)}")
    finally:
        await conn.close()


@main.command()
@click.option("--data-dir", default=".data", show_default=True, type=click.Path(path_type=Path))
def dev(data_dir: Path) -> None:
    """Start the whole product locally: embedded PostgreSQL and Redis unless CATALOG_DATABASE_URL /
    REDIS_URL are set, catalog migrations, the first database server, the API, a worker and the demo
    app. Ctrl-C stops everything it started."""
    from control_plane.embedded import EmbeddedPostgres, EmbeddedRedis
    from migrations import runner

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    started: list = []
    children: list[subprocess.Popen] = []
    try:
        embedded_pg = None
        if not env.get("CATALOG_DATABASE_URL"):
            click.echo("starting embedded PostgreSQL in " + str(data_dir / "postgres"))
            embedded_pg = EmbeddedPostgres(data_dir / "postgres").start()
            started.append(embedded_pg)
            asyncio.run(_ensure_database(embedded_pg.dsn(), "tenantplane"))
            env["CATALOG_DATABASE_URL"] = embedded_pg.dsn("tenantplane")
        if not env.get("REDIS_URL"):
            click.echo("starting embedded Redis (valkey)")
            redis = EmbeddedRedis(data_dir / "redis").start()
            started.append(redis)
            env["REDIS_URL"] = redis.url
        env.setdefault("SECRET_KEY", _kept_secret(data_dir / "secret_key", lambda: secrets.token_urlsafe(48)))
        env.setdefault("ADMIN_TOKEN", _kept_secret(data_dir / "admin_token", lambda: "tpa_" + secrets.token_urlsafe(32)))
        env.setdefault("TENANT_JWT_SECRET", _kept_secret(data_dir / "jwt_secret", lambda: secrets.token_urlsafe(48)))
        settings = Settings.from_env(env)
        runner.upgrade_sync("catalog", settings.catalog_database_url)
        server_dsn = embedded_pg.dsn() if embedded_pg else settings.catalog_database_url
        asyncio.run(_register_first_server(settings, server_dsn, refresh=embedded_pg is not None))
        tenantctl = [sys.executable, "-m", "control_plane.cli"]
        for role in ("api", "worker", "app"):
            children.append(subprocess.Popen([*tenantctl, role], env=env))
        _wait_for_http(settings.api_host, settings.api_port)
        _wait_for_http(settings.api_host, settings.app_port)
        _print_banner(settings)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        raise click.ClickException("a process exited; stopping everything")
    except KeyboardInterrupt:
        click.echo("\nstopping")
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(started):
            server.stop()


async def _register_first_server(settings: Settings, dsn: str, refresh: bool) -> None:
    """The first server is the one `make run` uses; the embedded one may move ports between runs."""
    from sqlalchemy import text

    from control_plane.catalog.db import create_engine

    engine = create_engine(settings.catalog_database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM database_servers"))
    finally:
        await engine.dispose()
    if count == 0 or refresh:
        await _register(settings, "local", dsn, 500, 100, replace=True)


def _wait_for_http(host: str, port: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{host}:{port}/health/live", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise click.ClickException(f"nothing answered on {host}:{port}")


def _print_banner(s: Settings) -> None:
    api = f"http://{s.api_host}:{s.api_port}"
    app_url = f"http://acme.{s.tenant_apex}:{s.app_port}"
    click.echo(f"""
tenantplane is running
  control-plane API   {api}   (OpenAPI: {api}/schema/openapi.json, docs: {api}/schema)
  demo tenant app     http://{s.api_host}:{s.app_port}   (tenants at http://{{slug}}.{s.tenant_apex}:{s.app_port})
  admin token         {s.admin_token}

try:
  curl -s -X POST {api}/v1/tenants -H 'Authorization: Bearer {s.admin_token}' \\
       -H 'Content-Type: application/json' -d '{{"slug": "acme", "name": "Acme", "tier": "dedicated"}}'
  curl -s {api}/v1/tenants/acme -H 'Authorization: Bearer {s.admin_token}'      # wait for "active"
  curl -s -X POST {app_url}/api/projects -H 'Content-Type: application/json' -d '{{"name": "first"}}'
  curl -s {app_url}/api/projects

Ctrl-C stops everything.""", nl=True)


if __name__ == "__main__":
    main()
