"""Registering and listing database servers. The admin password is sealed (AES-GCM) before it
reaches the catalog and is never returned, logged or put in an error."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane import errors
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import DatabaseServer, Placement, Tenant
from control_plane.hostlist import HostAllowlist, is_tcp_host
from control_plane.schemas import DrainResult, RegisterServer, ServerList, ServerOut
from control_plane.services import audit
from provisioning import queue
from provisioning.sealing import SecretBox
from provisioning.servers import ServerInfo

log = logging.getLogger("tenantplane.servers")

# DSN parameters that would point the connection elsewhere than the URL says (a unix socket, another
# host, a file on the API's machine). Only sslmode is stored, so they would have been dropped, but
# a DSN is refused rather than registered as something other than what it reads; other parameters
# (application_name, connect_timeout, ...) are still ignored, as before.
_REDIRECTING = frozenset({"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service",
                          "servicefile", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir"})
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def parse_dsn(dsn: str) -> dict[str, Any]:
    """Split an admin DSN into catalog columns. Errors name the part, never echo the DSN."""
    if any(ord(c) < 32 for c in dsn):
        raise errors.InvalidDsn("the DSN contains control characters")
    try:
        parts = urlsplit(dsn)
        port = parts.port or 5432
    except ValueError:
        raise errors.InvalidDsn("the DSN could not be parsed (expected postgresql://user:password@host:port/db)") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise errors.InvalidDsn("the DSN must start with postgresql://")
    if not parts.hostname:
        raise errors.InvalidDsn("the DSN names no host")
    if not parts.username:
        raise errors.InvalidDsn("the DSN names no user")
    _refuse_socket_hosts(parts.hostname)
    query = parse_qs(parts.query, keep_blank_values=True)
    redirecting = sorted(set(query) & _REDIRECTING)
    if redirecting:
        raise errors.InvalidDsn(f"the DSN parameter {redirecting[0]!r} is not accepted: name the host, port, "
                                "user and database in the URL")
    sslmode = query.get("sslmode", [None])[0]
    if sslmode is not None and sslmode not in _SSLMODES:
        raise errors.InvalidDsn("unknown sslmode")
    database = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "host": parts.hostname, "port": port, "admin_user": unquote(parts.username),
        "admin_password": unquote(parts.password) if parts.password else None,
        "admin_database": database, "sslmode": sslmode,
    }


def _refuse_socket_hosts(host: str) -> None:
    """A TCP host only: `%2Ftmp` (a percent-encoded path, which the connection unquotes) or a
    comma-separated host list would reach a unix socket or hosts the checks never saw."""
    if not is_tcp_host(host):
        raise errors.InvalidDsn("the DSN's host must be a host name or an IP address (no unix-socket path)")


def masked_dsn(server: DatabaseServer) -> str:
    secret = ":***" if server.admin_password_sealed else ""
    return f"postgresql://{server.admin_user}{secret}@{server.host}:{server.port}/{server.admin_database}"


CANNOT_CONNECT = "could not connect to the server and log in as the DSN's user"


async def check_server(info: ServerInfo, box: SecretBox) -> None:
    """The server must answer and the user must be able to create databases and roles. Every
    failure to connect gets the same answer, whatever its cause (refused, timed out, not
    PostgreSQL, wrong password): the cause would tell the caller which ports of which hosts are
    open. The cause goes to the server log only."""
    try:
        conn = await asyncpg.connect(info.dsn(box), timeout=5)
    except Exception as exc:
        log.warning("registering server %r: connecting to %r:%s failed: %s", info.name, info.host, info.port,
                    _without_password(exc, info, box))
        raise errors.ServerUnreachable(CANNOT_CONNECT) from None
    try:
        allowed = await conn.fetchval(
            "SELECT rolsuper OR (rolcreatedb AND rolcreaterole) FROM pg_roles WHERE rolname = current_user")
    finally:
        await conn.close()
    if not allowed:
        raise errors.ServerUnreachable("the DSN's user needs CREATEDB and CREATEROLE (or superuser)")


def _without_password(exc: Exception, info: ServerInfo, box: SecretBox) -> str:
    text = f"{type(exc).__name__}: {exc}"[:300]
    password = box.open(info.admin_password_sealed, str(info.id)) if info.admin_password_sealed else ""
    return text.replace(password, "***") if password else text


_SERVER_NAME = re.compile(r"[a-z][a-z0-9-]{1,62}")  # RegisterServer's name pattern


def _refuse_impossible_name(name: str) -> None:
    """A name no server can have (a NUL, a newline, ...) names none: 404, and it never reaches SQL."""
    if not _SERVER_NAME.fullmatch(name):
        raise errors.ServerNotFound(f"no database server named {name[:63]!r}")


class ServerService:
    def __init__(self, sessions: async_sessionmaker, box: SecretBox, allowed_hosts: HostAllowlist | None = None) -> None:
        self.sessions = sessions
        self.box = box
        self.allowed_hosts = allowed_hosts  # None: any host (SERVER_ALLOWED_HOSTS unset)

    def _refuse_unlisted_host(self, host: str) -> None:
        # checked before any connection is tried, so an unlisted host is never probed
        if self.allowed_hosts is not None and not self.allowed_hosts.permits(host):
            raise errors.ServerHostNotAllowed("this host is not in SERVER_ALLOWED_HOSTS")

    async def register(self, actor: str, body: RegisterServer, *, replace: bool = False) -> ServerOut:
        parsed = parse_dsn(body.dsn)
        self._refuse_unlisted_host(parsed["host"])
        password = parsed.pop("admin_password")
        async with self.sessions() as session, session.begin():
            existing = await session.scalar(select(DatabaseServer).where(DatabaseServer.name == body.name)
                                            .with_for_update())
            if existing is not None and not replace:
                raise errors.ServerNameTaken(f"a server named {body.name!r} is registered already")
            server = existing or DatabaseServer(id=uuid.uuid4(), name=body.name)
            for column, value in parsed.items():
                setattr(server, column, value)
            server.admin_password_sealed = self.box.seal(password, str(server.id)) if password else None
            server.capacity_databases = body.capacity_databases
            server.capacity_connections = body.capacity_connections
            await check_server(ServerInfo(id=server.id, name=server.name, host=server.host, port=server.port,
                                          admin_user=server.admin_user, admin_database=server.admin_database,
                                          admin_password_sealed=server.admin_password_sealed,
                                          sslmode=server.sslmode), self.box)
            if existing is None:
                session.add(server)
            try:
                await session.flush()
            except IntegrityError:
                raise errors.ServerNameTaken(f"a server named {body.name!r} is registered already") from None
            audit.record(session, actor, "server.replace" if existing else "server.register", "server",
                         server.id, name=body.name, host=server.host, port=server.port)
        return (await self._list(server.id))[0]

    async def list(self) -> ServerList:
        return ServerList(items=await self._list())

    async def _list(self, server_id: uuid.UUID | None = None) -> list[ServerOut]:
        count = (select(func.count()).select_from(Placement)
                 .where(Placement.server_id == DatabaseServer.id).scalar_subquery())
        query = select(DatabaseServer, count.label("tenant_count")).order_by(DatabaseServer.name)
        if server_id is not None:
            query = query.where(DatabaseServer.id == server_id)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            ServerOut(id=s.id, name=s.name, host=s.host, port=s.port, admin_user=s.admin_user,
                      admin_database=s.admin_database, dsn=masked_dsn(s), capacity_databases=s.capacity_databases,
                      capacity_connections=s.capacity_connections, status=s.status, tenant_count=n,
                      created_at=s.created_at)
            for s, n in rows
        ]


    async def set_status(self, actor: str, name: str, status: str) -> ServerOut:
        """`cordoned`: no new tenants are placed here; `active`: placement resumes."""
        _refuse_impossible_name(name)
        async with self.sessions() as session, session.begin():
            server = await session.scalar(select(DatabaseServer).where(DatabaseServer.name == name).with_for_update())
            if server is None:
                raise errors.ServerNotFound(f"no database server named {name[:63]!r}")
            server.status = status
            audit.record(session, actor, f"server.{'cordon' if status == 'cordoned' else 'uncordon'}", "server",
                         server.id, name=name)
        return (await self._list(server.id))[0]

    async def drain(self, actor: str, name: str) -> DrainResult:
        """Cordon the server and queue a move (same tier, another server) for each tenant on it."""
        await self.set_status(actor, name, "cordoned")
        async with self.sessions() as session, session.begin():
            server = await session.scalar(select(DatabaseServer).where(DatabaseServer.name == name))
            rows = (await session.execute(
                select(Tenant.id, Tenant.tier).join(Placement, Placement.tenant_id == Tenant.id)
                .where(Placement.server_id == server.id, Tenant.status == "active")
                .where(text(queue.no_open_operation("tenants.id"))))).all()
            moves = [queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant_id, params={"tier": tier})
                     for tenant_id, tier in rows]
            if moves:
                await queue.enqueue_many(DriverSQL(await session.connection()), "move_tenant", moves)
            audit.record(session, actor, "server.drain", "server", server.id, name=name, moves=len(moves))
            await session.flush()
        return DrainResult(server=name, status="cordoned", operation_ids=[op.id for op in moves])
