"""create_app(settings): the control plane's one composition root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, Router, get
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from sqlalchemy import text

from control_plane import errors, scopes
from control_plane.api import docs, outages
from control_plane.api.controllers import billing
from control_plane.api.controllers.admin_keys import AdminKeyController
from control_plane.api.controllers.backups import BackupController, TenantBackupController
from control_plane.api.controllers.domains import DomainController
from control_plane.api.controllers.erasure import ErasureController
from control_plane.api.controllers.events import EventController
from control_plane.api.controllers.fleet import AuditController, OverviewController
from control_plane.api.controllers.gates import (
    PlanController,
    TenantGatesController,
    UserController,
)
from control_plane.api.controllers.migrations import MigrationController
from control_plane.api.controllers.operations import OperationController
from control_plane.api.controllers.reconciliation import ReconciliationController
from control_plane.api.controllers.servers import ServerController
from control_plane.api.controllers.tenants import TenantController
from control_plane.api.metrics import ApiMetrics, metrics_endpoint
from control_plane.billing import wiring as billing_wiring
from control_plane.catalog.db import create_engine, sessionmaker
from control_plane.domain_dns import challenge_resolver
from control_plane.hostlist import HostAllowlist
from control_plane.services import auth_throttle, notify
from control_plane.services.admin_keys import AdminKeyService
from control_plane.services.audit import AuditService
from control_plane.services.auth import AdminAuth
from control_plane.services.backups import BackupService
from control_plane.services.domains import DomainService
from control_plane.services.erasure import ErasureService
from control_plane.services.events import EventService
from control_plane.services.memberships import MembershipService
from control_plane.services.migrations import MigrationService
from control_plane.services.operation_waits import OperationWaits
from control_plane.services.operations import OperationService
from control_plane.services.overview import OverviewService
from control_plane.services.plans import PlanService
from control_plane.services.reconciliation import ReconciliationService
from control_plane.services.servers import ServerService
from control_plane.services.tenants import TenantService
from control_plane.settings import Settings
from provisioning.announcements import BatchedAnnouncements, redis_client
from provisioning.sealing import SecretBox
from provisioning.tree_check import agree_on_tree
from tenant_router.observability import RequestContextMiddleware, response_hook
from tenant_router.problems import problem, require_json_body

MAX_BODY_BYTES = 64 * 1024


async def admin_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    auth: AdminAuth = connection.app.state.auth
    client = connection.client.host if connection.client else None  # whose failures are counted
    key = await auth.authenticate_key(connection.headers.get("authorization"), client)
    connection.state.actor = key.actor
    area, method = handler.opt.get("area"), connection.scope.get("method", "GET")  # no area: admin only
    if not scopes.allowed(key.scopes, area, method):
        needed = sorted(scopes.needed(area, method) | {"admin"})
        raise errors.InsufficientScope(f"this needs a key with scope {' or '.join(needed)}", needed=needed)


@get("/health/live", tags=["health"], summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready", tags=["health"], summary="The catalog is reachable")
async def ready(request: Request) -> Any:
    try:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return problem(503, "catalog_unavailable", "Not ready", "the catalog database is not reachable",
                       {"Retry-After": "5"})
    return {"status": "ok"}


def admin_routes() -> Router:
    """Every admin route, behind the admin token; health, metrics and the schema stay outside."""
    return Router(path="/", guards=[admin_guard], route_handlers=[
        TenantController, OperationController, ServerController, PlanController, TenantGatesController,
        UserController, DomainController, ReconciliationController, MigrationController,
        TenantBackupController, BackupController, AuditController, OverviewController,
        AdminKeyController, EventController, ErasureController, *billing.ADMIN_CONTROLLERS])


# app.state attributes handlers receive by name
_SERVICES = ("tenants", "operations", "operation_waits", "servers", "plans", "memberships", "domains",
             "reconciliation", "migrations", "backups", "audit", "overview", "admin_keys",
             "events", "erasure")  # app.state attributes handlers receive by name


def _from_state(name: str) -> Provide:
    def provider(request: Request) -> Any:
        return getattr(request.app.state, name)

    provider.__name__ = f"provide_{name}"
    return Provide(provider, sync_to_thread=False)


log = logging.getLogger("tenantplane.api")

async def _agree_on_tree(settings: Settings) -> None:
    """The API's tenant tree must be the workers' (provisioning/tree_check.py): a mismatch refuses
    the start. A catalog that cannot be reached now is not waited for (the API answers 503 until it
    is back, and the workers, which build and migrate tenants, check when it is)."""
    try:
        conn = await asyncpg.connect(settings.catalog_database_url, timeout=settings.catalog_connect_timeout_seconds)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        log.warning("tenant tree not checked: catalog unreachable (%s)", type(exc).__name__)
        return
    try:
        await agree_on_tree(conn, settings.tenant_tree, "API")
    finally:
        await conn.close()


def create_app(settings: Settings) -> Litestar:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await _agree_on_tree(settings)
        engine = create_engine(settings.catalog_database_url, connect_timeout=settings.catalog_connect_timeout_seconds,
                               statement_timeout=settings.catalog_statement_timeout_seconds)
        sessions = sessionmaker(engine)
        client = redis_client(settings.redis_url, settings.redis_timeout_seconds) if settings.redis_url else None
        # what the services announce placement changes through (bounded; failures sent again later)
        redis = (BatchedAnnouncements(client, timeout=settings.redis_timeout_seconds,
                                      outbox=notify.catalog_outbox(engine)) if client is not None else None)
        app.state.engine = engine
        app.state.metrics = metrics
        app.state.auth = AdminAuth(sessions, throttle=auth_throttle.build(settings, client))
        app.state.tenants = TenantService(sessions, settings.tenant_tree, redis)
        app.state.operations = OperationService(sessions)
        app.state.erasure = ErasureService(sessions)
        app.state.audit = AuditService(sessions)
        app.state.events = EventService(sessions)
        app.state.admin_keys = AdminKeyService(sessions, app.state.auth)
        app.state.overview = OverviewService(sessions, settings.tenant_tree)
        app.state.operation_waits = OperationWaits(settings.catalog_database_url)
        app.state.servers = ServerService(sessions, SecretBox(settings.secret_key),
                                          HostAllowlist.parse(settings.server_allowed_hosts))
        app.state.plans = PlanService(sessions, redis)
        app.state.memberships = MembershipService(sessions, redis)
        app.state.domains = DomainService(sessions, redis, settings.tenant_apex, challenge_resolver(
            settings.domain_verification, settings.domain_verification_nameservers,
            settings.domain_verification_timeout_seconds))
        app.state.migrations = MigrationService(settings.catalog_database_url, settings.tenant_tree)
        app.state.reconciliation = ReconciliationService(
            settings.catalog_database_url, SecretBox(settings.secret_key),
            backup_store_url=settings.backup_store_url, redis_url=settings.redis_url,
            kms_key_per_tenant=settings.backup_kms_key_per_tenant)
        app.state.billing = billing_wiring.build(settings, sessions, redis)
        app.state.billing.start()
        app.state.backups = BackupService(sessions, settings.tenant_tree, store_url=settings.backup_store_url,
                                          kms_key_id=settings.kms_key_id,
                                          master_key_file=settings.backup_master_key_file,
                                          kms_key_per_tenant=settings.backup_kms_key_per_tenant,
                                          kms_deletion_window_days=settings.backup_kms_deletion_window_days)
        if settings.admin_token:
            await app.state.auth.ensure_bootstrap_token(settings.admin_token)
        try:
            yield
        finally:
            await app.state.operation_waits.close()
            await app.state.billing.close()
            await app.state.auth.throttle.aclose()
            if redis is not None:
                await redis.aclose()
                await client.aclose()
            await engine.dispose()

    app = Litestar(
        route_handlers=[live, ready, metrics_endpoint, admin_routes(), docs.assets_router(), *billing.PUBLIC_HANDLERS],
        dependencies={name: _from_state(name) for name in _SERVICES},
        exception_handlers=outages.HANDLERS,  # type: ignore[arg-type]
        before_request=require_json_body,
        middleware=[RequestContextMiddleware()],  # binds request_id for every log line of the request
        before_send=[response_hook(metrics.observe_request)],  # X-Request-ID, access log, metrics
        logging_config=None,  # logging is configured by the process (observability.configure_logging)
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=docs.openapi_config("0.1.0"),
    )
    docs.document_problems(app, lambda handler: admin_guard in handler.resolve_guards())
    return app
