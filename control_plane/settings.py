"""Settings: one frozen struct, built once from the environment by `Settings.from_env()` and passed
explicitly to whatever needs it. Nothing reads the environment at import time."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

from control_plane.domain_dns import parse_nameservers
from control_plane.hostlist import HostAllowlist
from migrations.tree import TenantTree, TenantTreeError, load_tenant_tree
from provisioning import events
from provisioning.config import WorkerConfig


class SettingsError(ValueError):
    pass


BILLING_FIELDS = ("stripe_api_key", "stripe_api_base", "stripe_webhook_secret", "billing_grace_days",
                  "billing_suspend_after_days", "billing_free_plan", "dunning_webhook_url",
                  "dunning_webhook_secret", "dunning_retry_base_seconds", "billing_interval_seconds",
                  "billing_apply_in")
BILLING_APPLY_IN = ("worker", "api")

RETENTION_FIELDS = ("operation_retention_days", "report_retention_days", "audit_retention_days",
                    "retention_interval_seconds", "retention_batch_size")
EVENTS_FIELDS = ("events_webhook_url", "events_webhook_secret", "events_retry_base_seconds", "events_interval_seconds",
                 "events_webhook_types", "events_give_up_after_hours", "events_keep_days")


def _worker_default(name: str) -> object:
    """A worker setting's default, as WorkerConfig declares it."""
    return next(f.default for f in msgspec.structs.fields(WorkerConfig) if f.name == name)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    catalog_database_url: str  # postgresql://user:password@host:port/db
    secret_key: str  # master secret: encrypts server DSN passwords, derives tenant role passwords
    redis_url: str | None = None
    admin_token: str | None = None  # bootstrap admin API token (stored hashed)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    app_port: int = 8001
    tenant_apex: str = "localhost"
    tenant_jwt_secret: str | None = None
    # TENANT_MIGRATIONS, read and checked once by from_env(); API, workers and CLI pass it on
    tenant_tree: TenantTree = _worker_default("tenant_tree")
    # the workers' settings (WorkerConfig says what each means)
    worker_poll_interval: float = _worker_default("poll_interval")
    worker_concurrency: int = _worker_default("concurrency")
    step_max_attempts: int = _worker_default("max_attempts")
    step_retry_base_seconds: float = _worker_default("retry_base_seconds")
    reconcile_interval_seconds: float = _worker_default("reconcile_interval_seconds")
    login_check_interval_seconds: float = _worker_default("login_check_interval_seconds")
    spare_databases: int = _worker_default("spare_databases")
    worker_pause_before_step: str | None = _worker_default("pause_before_step")  # a test hook
    # bounds on waiting for Redis and the catalog (API and workers; WorkerConfig says what each means)
    redis_timeout_seconds: float = _worker_default("redis_timeout_seconds")
    catalog_connect_timeout_seconds: float = _worker_default("catalog_connect_timeout_seconds")
    catalog_statement_timeout_seconds: float = _worker_default("catalog_statement_timeout_seconds")
    backup_store_url: str | None = _worker_default("backup_store_url")
    kms_key_id: str | None = _worker_default("kms_key_id")
    backup_master_key_file: str = _worker_default("backup_master_key_file")
    backup_kms_key_per_tenant: bool = _worker_default("backup_kms_key_per_tenant")
    backup_kms_deletion_window_days: int = _worker_default("backup_kms_deletion_window_days")
    backup_schedule: str | None = _worker_default("backup_schedule")
    backup_keep_days: int = _worker_default("backup_keep_days")
    backup_keep_last: int = _worker_default("backup_keep_last")
    backup_before_move: bool = _worker_default("backup_before_move")
    backup_before_delete: bool = _worker_default("backup_before_delete")
    backup_drill_interval: float = _worker_default("backup_drill_interval")
    backup_drill_sample: int = _worker_default("backup_drill_sample")
    # billing (control_plane/billing/): without an API key checkout and portal answer 503
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None  # another Stripe API endpoint (a local fake in tests)
    stripe_webhook_secret: str | None = None  # comma-separated: any one of them signs a valid event
    billing_grace_days: int = 3  # past due: routers still admit the tenant this long (with a header)
    billing_suspend_after_days: int = _worker_default("billing_suspend_after_days")
    billing_free_plan: str | None = None  # where a cancelled subscription lands; unset: suspended
    dunning_webhook_url: str | None = _worker_default("dunning_webhook_url")
    dunning_webhook_secret: str | None = _worker_default("dunning_webhook_secret")
    dunning_retry_base_seconds: float = _worker_default("dunning_retry_base_seconds")
    billing_interval_seconds: float = _worker_default("billing_interval_seconds")
    worker_metrics_port: int | None = _worker_default("metrics_port")  # the worker's health and metrics
    worker_metrics_host: str = _worker_default("metrics_host")
    operation_retention_days: int = _worker_default("operation_retention_days")
    report_retention_days: int = _worker_default("report_retention_days")
    audit_retention_days: int = _worker_default("audit_retention_days")
    retention_interval_seconds: float = _worker_default("retention_interval_seconds")
    retention_batch_size: int = _worker_default("retention_batch_size")
    events_webhook_url: str | None = _worker_default("events_webhook_url")
    events_webhook_secret: str | None = _worker_default("events_webhook_secret")
    events_retry_base_seconds: float = _worker_default("events_retry_base_seconds")
    events_interval_seconds: float = _worker_default("events_interval_seconds")
    events_webhook_types: str | None = None  # comma-separated event types the webhook takes; unset: all
    events_give_up_after_hours: float = _worker_default("events_give_up_after_hours")
    events_keep_days: int = _worker_default("events_keep_days")
    # which processes apply recorded Stripe events: the workers (so the webhook's answers do not
    # share the API's CPU with the applier), or the API (a deployment without workers)
    billing_apply_in: str = "worker"
    server_allowed_hosts: str | None = None  # hosts the admin API may register (control_plane/hostlist.py)
    admin_auth_failures_per_minute: int = 20  # failed admin authentications per client address, then 429
    # ... and from all addresses together (every API process sharing Redis), then 429 for every address
    admin_auth_failures_global_per_minute: int = 200
    # custom domains: `off` routes a domain as soon as an admin adds it (the behaviour before the
    # setting existed); `dns` keeps it pending until its TXT challenge is found (control_plane/domain_dns.py)
    domain_verification: str = "off"
    domain_verification_nameservers: str | None = None  # IP[:port], comma-separated; unset: resolv.conf
    domain_verification_timeout_seconds: float = 5.0  # the whole TXT lookup, all nameservers and tries
    domain_verification_interval_seconds: float = 300.0  # the workers re-check pending domains; 0: only verify

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            catalog_dsn=self.catalog_database_url, secret_key=self.secret_key, redis_url=self.redis_url,
            tenant_tree=self.tenant_tree,
            poll_interval=self.worker_poll_interval, concurrency=self.worker_concurrency,
            max_attempts=self.step_max_attempts, retry_base_seconds=self.step_retry_base_seconds,
            reconcile_interval_seconds=self.reconcile_interval_seconds, spare_databases=self.spare_databases,
            login_check_interval_seconds=self.login_check_interval_seconds,
            pause_before_step=self.worker_pause_before_step, redis_timeout_seconds=self.redis_timeout_seconds,
            catalog_connect_timeout_seconds=self.catalog_connect_timeout_seconds,
            catalog_statement_timeout_seconds=self.catalog_statement_timeout_seconds,
            billing_interval_seconds=self.billing_interval_seconds,
            billing_suspend_after_days=self.billing_suspend_after_days,
            dunning_webhook_url=self.dunning_webhook_url, dunning_webhook_secret=self.dunning_webhook_secret,
            dunning_retry_base_seconds=self.dunning_retry_base_seconds,
            events_webhook_url=self.events_webhook_url, events_webhook_secret=self.events_webhook_secret,
            events_retry_base_seconds=self.events_retry_base_seconds,
            events_interval_seconds=self.events_interval_seconds,
            events_webhook_types=events.parse_types(self.events_webhook_types),
            events_give_up_after_hours=self.events_give_up_after_hours, events_keep_days=self.events_keep_days,
            backup_store_url=self.backup_store_url,
            kms_key_id=self.kms_key_id, backup_master_key_file=self.backup_master_key_file,
            backup_kms_key_per_tenant=self.backup_kms_key_per_tenant,
            backup_kms_deletion_window_days=self.backup_kms_deletion_window_days,
            backup_schedule=None if self.backup_schedule in (None, "", "off") else self.backup_schedule,
            backup_keep_days=self.backup_keep_days,
            backup_keep_last=self.backup_keep_last,
            backup_before_move=self.backup_before_move, backup_before_delete=self.backup_before_delete,
            backup_drill_interval=self.backup_drill_interval, backup_drill_sample=self.backup_drill_sample,
            metrics_port=self.worker_metrics_port, metrics_host=self.worker_metrics_host,
            **{name: getattr(self, name) for name in RETENTION_FIELDS},
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        mapping = {
            "catalog_database_url": "CATALOG_DATABASE_URL",
            "secret_key": "SECRET_KEY",
            "redis_url": "REDIS_URL",
            "admin_token": "ADMIN_TOKEN",
            "api_host": "API_HOST",
            "api_port": "API_PORT",
            "app_port": "APP_PORT",
            "tenant_apex": "TENANT_APEX",
            "tenant_jwt_secret": "TENANT_JWT_SECRET",
            "tenant_tree": "TENANT_MIGRATIONS",
            "worker_poll_interval": "WORKER_POLL_INTERVAL",
            "worker_concurrency": "WORKER_CONCURRENCY",
            "step_max_attempts": "STEP_MAX_ATTEMPTS",
            "step_retry_base_seconds": "STEP_RETRY_BASE_SECONDS",
            "reconcile_interval_seconds": "RECONCILE_INTERVAL_SECONDS",
            "login_check_interval_seconds": "LOGIN_CHECK_INTERVAL_SECONDS",
            "spare_databases": "SPARE_DATABASES",
            "server_allowed_hosts": "SERVER_ALLOWED_HOSTS",
            "admin_auth_failures_per_minute": "ADMIN_AUTH_FAILURES_PER_MINUTE",
            "admin_auth_failures_global_per_minute": "ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE",
            "domain_verification": "DOMAIN_VERIFICATION",
            "domain_verification_nameservers": "DOMAIN_VERIFICATION_NAMESERVERS",
            "domain_verification_timeout_seconds": "DOMAIN_VERIFICATION_TIMEOUT_SECONDS",
            "domain_verification_interval_seconds": "DOMAIN_VERIFICATION_INTERVAL_SECONDS",
            "worker_pause_before_step": "TENANTPLANE_TEST_PAUSE_BEFORE_STEP",
            "redis_timeout_seconds": "REDIS_TIMEOUT_SECONDS",
            "catalog_connect_timeout_seconds": "CATALOG_CONNECT_TIMEOUT_SECONDS",
            "catalog_statement_timeout_seconds": "CATALOG_STATEMENT_TIMEOUT_SECONDS",
            "backup_store_url": "BACKUP_STORE_URL",
            "kms_key_id": "KMS_KEY_ID",
            "backup_master_key_file": "BACKUP_MASTER_KEY_FILE",
            "backup_kms_key_per_tenant": "BACKUP_KMS_KEY_PER_TENANT",
            "backup_kms_deletion_window_days": "BACKUP_KMS_DELETION_WINDOW_DAYS",
            "backup_schedule": "BACKUP_SCHEDULE",
            "backup_keep_days": "BACKUP_KEEP_DAYS",
            "backup_keep_last": "BACKUP_KEEP_LAST",
            "backup_before_move": "BACKUP_BEFORE_MOVE",
            "backup_before_delete": "BACKUP_BEFORE_DELETE",
            "backup_drill_interval": "BACKUP_DRILL_INTERVAL",
            "backup_drill_sample": "BACKUP_DRILL_SAMPLE",
            **{name: name.upper() for name in BILLING_FIELDS},
            "worker_metrics_port": "WORKER_METRICS_PORT",
            "worker_metrics_host": "WORKER_METRICS_HOST",
            "report_retention_days": "RECONCILIATION_RETENTION_DAYS",
            **{name: name.upper() for name in RETENTION_FIELDS if name != "report_retention_days"},
            **{name: name.upper() for name in EVENTS_FIELDS},
        }
        for field, var in mapping.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("tenant_tree"), str):  # a folder: checked here, before anything runs
            try:
                values["tenant_tree"] = load_tenant_tree(values["tenant_tree"])
            except TenantTreeError as exc:
                raise SettingsError(str(exc)) from None
        try:
            settings = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"invalid settings: {exc}") from None
        validate(settings)
        return settings


MIN_SECRET_LENGTH = 32
CATALOG_URL_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")  # migrations/runner.py reads these
_PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|your[-_ ]?(?:secret|token|key)", re.IGNORECASE)


def _weak_secret(value: str) -> str | None:
    """Why `value` is too weak to be a secret, or None."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < 8:  # "x" * 32, "abababab...": long but guessable
        return "must be random, not a few characters repeated (e.g. secrets.token_urlsafe(48))"
    if _PLACEHOLDER.search(value):
        return "is a placeholder; set a random value"
    return None


def validate(settings: Settings) -> None:
    """Checks a process runs before it starts; errors name the environment variable."""
    secrets = {"SECRET_KEY": settings.secret_key, "ADMIN_TOKEN": settings.admin_token,
               "TENANT_JWT_SECRET": settings.tenant_jwt_secret,
               "DUNNING_WEBHOOK_SECRET": settings.dunning_webhook_secret,
               "EVENTS_WEBHOOK_SECRET": settings.events_webhook_secret}
    # checked here so a typo is named at start, not as a traceback from the first connect; the URL
    # itself is never echoed (it carries the password)
    if not settings.catalog_database_url.startswith(CATALOG_URL_SCHEMES):
        raise SettingsError("CATALOG_DATABASE_URL must be a postgresql:// URL "
                            "(postgresql://user:password@host:port/database)")
    for var, value in secrets.items():
        problem = _weak_secret(value) if value is not None else None
        if problem:
            raise SettingsError(f"{var} {problem}")
    try:
        HostAllowlist.parse(settings.server_allowed_hosts)
    except ValueError as exc:
        raise SettingsError(f"SERVER_ALLOWED_HOSTS: {exc}") from None
    for name, url, secret in (("DUNNING", settings.dunning_webhook_url, settings.dunning_webhook_secret),
                              ("EVENTS", settings.events_webhook_url, settings.events_webhook_secret)):
        if url:
            if not secret:
                raise SettingsError(f"{name}_WEBHOOK_URL needs {name}_WEBHOOK_SECRET (what it gets is signed)")
            if not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]{1,2000}", url):
                raise SettingsError(f"{name}_WEBHOOK_URL must be an http(s) URL")
    if settings.events_interval_seconds <= 0 or settings.events_retry_base_seconds <= 0:
        raise SettingsError("EVENTS_INTERVAL_SECONDS and EVENTS_RETRY_BASE_SECONDS must be more than 0")
    _validate_events(settings)
    if settings.billing_grace_days < 0 or settings.billing_suspend_after_days < settings.billing_grace_days:
        raise SettingsError("BILLING_SUSPEND_AFTER_DAYS must be at least BILLING_GRACE_DAYS (and both >= 0)")
    if settings.billing_apply_in not in BILLING_APPLY_IN:
        raise SettingsError(f"BILLING_APPLY_IN must be one of {', '.join(BILLING_APPLY_IN)}")
    for var in ("redis_timeout_seconds", "catalog_connect_timeout_seconds", "catalog_statement_timeout_seconds"):
        if getattr(settings, var) <= 0:
            raise SettingsError(f"{var.upper()} must be more than 0")
    if settings.backup_store_url is not None and not settings.backup_store_url.startswith(("file://", "s3://")):
        raise SettingsError("BACKUP_STORE_URL must be file:///path or s3://bucket/prefix")
    if settings.backup_schedule not in (None, "", "off"):
        from provisioning.schedules import InvalidSchedule, check_schedule

        try:
            check_schedule(settings.backup_schedule)
        except InvalidSchedule as exc:
            raise SettingsError(f"BACKUP_SCHEDULE: {exc}") from None
    if settings.backup_drill_interval < 0 or settings.backup_drill_sample < 1:
        raise SettingsError("BACKUP_DRILL_INTERVAL must not be negative and BACKUP_DRILL_SAMPLE at least 1")
    if not 7 <= settings.backup_kms_deletion_window_days <= 30:
        raise SettingsError("BACKUP_KMS_DELETION_WINDOW_DAYS must be 7-30 (the waiting period KMS allows "
                            f"before a key is deleted), not {settings.backup_kms_deletion_window_days}")
    if settings.backup_keep_days < 0 or settings.backup_keep_last < 0:
        raise SettingsError("BACKUP_KEEP_DAYS and BACKUP_KEEP_LAST must not be negative")
    _validate_retention(settings)
    if settings.worker_metrics_port is not None and not 0 <= settings.worker_metrics_port <= 65535:
        raise SettingsError("WORKER_METRICS_PORT must be a port number (0: a free one)")
    if settings.admin_auth_failures_per_minute < 1:
        raise SettingsError("ADMIN_AUTH_FAILURES_PER_MINUTE must be at least 1")
    if settings.admin_auth_failures_global_per_minute < settings.admin_auth_failures_per_minute:
        # below it, one address alone would shut every other out before reaching its own limit
        raise SettingsError("ADMIN_AUTH_FAILURES_GLOBAL_PER_MINUTE must be at least ADMIN_AUTH_FAILURES_PER_MINUTE")
    _validate_domain_verification(settings)


DOMAIN_VERIFICATION = ("off", "dns")


def _validate_domain_verification(settings: Settings) -> None:
    if settings.domain_verification not in DOMAIN_VERIFICATION:
        raise SettingsError(f"DOMAIN_VERIFICATION must be one of {', '.join(DOMAIN_VERIFICATION)}")
    if not 0 < settings.domain_verification_timeout_seconds <= 60:
        raise SettingsError("DOMAIN_VERIFICATION_TIMEOUT_SECONDS must be more than 0 and at most 60")
    if settings.domain_verification_interval_seconds < 0:
        raise SettingsError("DOMAIN_VERIFICATION_INTERVAL_SECONDS must not be negative (0: no re-checks)")
    try:
        parse_nameservers(settings.domain_verification_nameservers)
    except ValueError as exc:
        raise SettingsError(f"DOMAIN_VERIFICATION_NAMESERVERS: {exc}") from None


def _validate_events(settings: Settings) -> None:
    try:
        events.parse_types(settings.events_webhook_types)
    except ValueError as exc:
        raise SettingsError(f"EVENTS_WEBHOOK_TYPES: {exc}") from None
    if not settings.events_give_up_after_hours > 0:
        raise SettingsError("EVENTS_GIVE_UP_AFTER_HOURS must be more than 0")
    if settings.events_keep_days < 0:
        raise SettingsError("EVENTS_KEEP_DAYS must be 0 (forever) or more")


def _validate_retention(settings: Settings) -> None:
    days = {"OPERATION_RETENTION_DAYS": settings.operation_retention_days,
            "RECONCILIATION_RETENTION_DAYS": settings.report_retention_days,
            "AUDIT_RETENTION_DAYS": settings.audit_retention_days}
    for var, value in days.items():
        if value < 0:
            raise SettingsError(f"{var} must not be negative (0 keeps rows forever)")
    if settings.audit_retention_days and (
            settings.operation_retention_days == 0 or settings.audit_retention_days < settings.operation_retention_days):
        # the audit trail outlives what it describes
        raise SettingsError("AUDIT_RETENTION_DAYS must be 0 (forever) or at least OPERATION_RETENTION_DAYS")
    if settings.retention_interval_seconds < 0 or settings.retention_batch_size < 1:
        raise SettingsError("RETENTION_INTERVAL_SECONDS must not be negative and RETENTION_BATCH_SIZE at least 1")
