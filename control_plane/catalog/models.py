"""Catalog tables as SQLAlchemy 2 models: columns only, no I/O."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now():
    return mapped_column(Timestamp, server_default=func.now(), nullable=False)


class DatabaseServer(Base):
    __tablename__ = "database_servers"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    admin_user: Mapped[str] = mapped_column(String(63))
    admin_database: Mapped[str] = mapped_column(String(63))
    admin_password_sealed: Mapped[str | None] = mapped_column(Text)  # AES-GCM, never plain
    sslmode: Mapped[str | None] = mapped_column(String(16))
    capacity_databases: Mapped[int] = mapped_column(Integer)
    capacity_connections: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        Index("uq_tenants_live_slug", "slug", unique=True, postgresql_where=text("status <> 'deleted'")),
        Index("ix_tenants_status_id", "status", "id"),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    plan: Mapped[str | None] = mapped_column(ForeignKey("plans.name", onupdate="CASCADE"))
    billing_status: Mapped[str] = mapped_column(String(16), server_default="ok")  # ok | past_due
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    paid_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    past_due_since: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    billing_grace_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)  # routers admit until then
    pending_tier: Mapped[str | None] = mapped_column(String(16))  # a plan's tier not yet queued as a move
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class Placement(Base):
    __tablename__ = "placements"
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    server_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("database_servers.id"))
    database_name: Mapped[str] = mapped_column(String(63))
    role_name: Mapped[str] = mapped_column(String(63))
    schema_name: Mapped[str | None] = mapped_column(String(63))
    tenant_revision: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class Operation(Base):
    __tablename__ = "operations"
    __table_args__ = (
        # at most one unfinished operation per tenant
        Index("uq_operations_one_open_per_tenant", "tenant_id", unique=True,
              postgresql_where=text("state IN ('queued', 'running')")),
        Index("ix_operations_open", "state", "next_attempt_at",
              postgresql_where=text("state IN ('queued', 'running')")),
        Index("ix_operations_created_at", "created_at", "id"),  # the fleet list, newest first
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    state: Mapped[str] = mapped_column(String(16), server_default="queued")
    params: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime] = _now()
    created_at: Mapped[dt.datetime] = _now()
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class OperationStep(Base):
    __tablename__ = "operation_steps"
    __table_args__ = (UniqueConstraint("operation_id", "position"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    operation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class AdminApiKey(Base):
    __tablename__ = "admin_api_keys"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = _now()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default=text("'{admin}'"))
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_by: Mapped[str | None] = mapped_column(String(100))


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at", "id"),)  # the audit list, newest first
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = _now()
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class Plan(Base):
    __tablename__ = "plans"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), server_default="")
    features: Mapped[list[str]] = mapped_column(ARRAY(String(63)), server_default=text("'{}'"))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)  # NULL: unlimited
    stripe_price_ids: Mapped[list[str]] = mapped_column(ARRAY(String(255)), server_default=text("'{}'"))
    tier: Mapped[str | None] = mapped_column(String(16))  # tenants put on the plan move to this tier
    tier_on_leave: Mapped[str | None] = mapped_column(String(16))  # and to this one when they leave it
    # the plan's backup schedule and retention ({"schedule", "keep_days", "keep_last"}); NULL: the global settings
    backup: Mapped[dict | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = _now()
    updated_at: Mapped[dt.datetime] = _now()


class TenantFeatureOverride(Base):
    """Per-tenant feature switch that wins over the plan: enabled=true grants, false withholds."""

    __tablename__ = "tenant_feature_overrides"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "feature"),)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    feature: Mapped[str] = mapped_column(String(63))
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = _now()


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), server_default="")
    created_at: Mapped[dt.datetime] = _now()


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (PrimaryKeyConstraint("user_id", "tenant_id"),)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # owner | admin | member | viewer
    created_at: Mapped[dt.datetime] = _now()


class TenantDomain(Base):
    """A custom domain that routes to a tenant (normalised: lowercase, no port, no trailing dot)."""

    __tablename__ = "tenant_domains"
    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = _now()
    verified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)  # NULL: added with verification off


class DomainChallenge(Base):
    """A custom domain a tenant claimed and has not proved yet (DOMAIN_VERIFICATION=dns): it routes
    nowhere until a TXT record `_tenantplane-challenge.<domain>` holding `token` is found, when it
    moves to tenant_domains. Routers cannot read this table."""

    __tablename__ = "domain_challenges"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "domain"),)
    domain: Mapped[str] = mapped_column(String(253))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    token: Mapped[str] = mapped_column(String(64))  # published in DNS: not a secret
    created_at: Mapped[dt.datetime] = _now()
    checked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class ReconciliationReport(Base):
    """What the reconciler found when it last compared the catalog with the servers."""

    __tablename__ = "reconciliation_reports"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    report: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class MigrationRun(Base):
    """A fleet migration: every selected tenant to one revision, canary first, then in waves."""

    __tablename__ = "migration_runs"
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    target_revision: Mapped[str] = mapped_column(String(64))
    canary_size: Mapped[int] = mapped_column(Integer)
    wave_size: Mapped[int] = mapped_column(Integer)
    halt_on_error: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    state: Mapped[str] = mapped_column(String(16), server_default="running")  # running|succeeded|failed|halted
    current_wave: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class MigrationRunTenant(Base):
    __tablename__ = "migration_run_tenants"
    __table_args__ = (PrimaryKeyConstraint("run_id", "tenant_id"), Index("ix_migration_run_tenants_wave", "run_id", "wave"))
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_runs.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    wave: Mapped[int] = mapped_column(Integer)  # 0 is the canary wave
    state: Mapped[str] = mapped_column(String(16), server_default="pending")  # pending|queued|succeeded|failed|skipped
    operation_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    from_revision: Mapped[str | None] = mapped_column(String(64))
    to_revision: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class TenantKey(Base):
    """A version of a tenant's backup data key, only ever stored wrapped (provisioning/backups/keys.py)."""

    __tablename__ = "tenant_keys"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "version"),)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # NULL once destroyed
    wrapper_kind: Mapped[str] = mapped_column(String(16))  # local | kms | kms_tenant
    wrapper_key_id: Mapped[str] = mapped_column(Text)  # which master key wrapped it
    created_at: Mapped[dt.datetime] = _now()
    wrapped_at: Mapped[dt.datetime] = _now()
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class TenantKmsKey(Base):
    """A tenant's own KMS key, with BACKUP_KMS_KEY_PER_TENANT (provisioning/backups/tenant_kms.py owns
    every statement); key_id is NULL between the intent and CreateKey's answer."""

    __tablename__ = "tenant_kms_keys"
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(Text)
    alias: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    aliased_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    deletion_scheduled_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    deletion_date: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class Backup(Base):
    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_tenant_created", "tenant_id", "created_at"),
        # a scheduled backup is taken once per slot, however many workers see the slot come
        Index("uq_backups_schedule_slot", "tenant_id", "schedule_slot", unique=True,
              postgresql_where=text("schedule_slot IS NOT NULL")),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    tier: Mapped[str] = mapped_column(String(16))  # at dump time
    revision: Mapped[str | None] = mapped_column(String(64))  # at dump time
    state: Mapped[str] = mapped_column(String(16), server_default="queued")  # queued|running|succeeded|failed|expired
    trigger: Mapped[str] = mapped_column(String(16), server_default="manual")  # manual|schedule|pre_move|pre_delete
    label: Mapped[str | None] = mapped_column(String(200))
    store: Mapped[str] = mapped_column(String(16))  # file | s3
    object_key: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    digest: Mapped[str | None] = mapped_column(String(64))  # sha256 of the stored object, hex
    key_version: Mapped[int | None] = mapped_column(Integer)
    manifest: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))  # tables, counts, checksums
    operation_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    schedule_slot: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _now()
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    verified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    drill_result: Mapped[dict | None] = mapped_column(JSONB)  # the last restore drill: ok, seconds, error


# --- billing (control_plane/billing/) ---


class BillingEvent(Base):
    """Each Stripe event once (its id is the key), with what applying it did."""

    __tablename__ = "billing_events"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_...
    type: Mapped[str] = mapped_column(String(100))
    created: Mapped[dt.datetime] = mapped_column(Timestamp)  # when Stripe made it
    received_at: Mapped[dt.datetime] = _now()
    deliveries: Mapped[int] = mapped_column(Integer, server_default="1")
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    state: Mapped[str] = mapped_column(String(16))  # received (until applied) | applied | parked | ignored | failed
    effect: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    payload: Mapped[dict] = mapped_column(JSONB)


class BillingObject(Base):
    """The newest state seen of one Stripe subscription or invoice, and the event it came from:
    an older event for the same object changes nothing."""

    __tablename__ = "billing_objects"
    object_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # subscription | invoice
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    last_event_created: Mapped[dt.datetime] = mapped_column(Timestamp)
    last_event_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    price_id: Mapped[str | None] = mapped_column(String(255))
    period_end: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    failed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    terminal: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class BillingIdempotencyKey(Base):
    """The key of an outbound Stripe call, written before the call; reused until its answer is
    recorded, so a retry after a crash is the same request to Stripe."""

    __tablename__ = "billing_idempotency_keys"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = _now()
    completed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    result_id: Mapped[str | None] = mapped_column(String(255))


class DunningNotice(Base):
    __tablename__ = "dunning_outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()
    next_attempt_at: Mapped[dt.datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class BillingSyncCheckpoint(Base):
    __tablename__ = "billing_sync_checkpoints"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_created: Mapped[dt.datetime] = mapped_column(Timestamp)
    last_event_id: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = _now()


class TenantEvent(Base):
    """A lifecycle event; every statement on it is provisioning/events.py's (this declares the
    columns for the metadata). `txid` (xid8, the writing transaction) is left out: SQLAlchemy has
    no type for it, and nothing reads it through the ORM."""

    __tablename__ = "tenant_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    operation_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    occurred_at: Mapped[dt.datetime] = _now()
    data: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    next_attempt_at: Mapped[dt.datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    abandoned_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)  # delivery gave up
    pending_since: Mapped[dt.datetime] = _now()  # the give-up window's start (a redelivery resets it)
    __table_args__ = (Index("ix_tenant_events_tenant", "tenant_id", "id"), Index("ix_tenant_events_type", "type", "id"),
                      Index("ix_tenant_events_occurred_at", "occurred_at", "id"))


class TenantErasure(Base):
    """An erased tenant: the suppression list (restore and the reconciler check it) and the erasure
    report; no personal data, only the id, dates and what was removed where (provisioning/erasure.py)."""

    __tablename__ = "tenant_erasures"
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    requested_at: Mapped[dt.datetime] = _now()
    completed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    operation_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    # place name -> {"removed": ..., "at": ISO time, "remains": ... (optional)}
    places: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class AnnouncementOutbox(Base):
    """A routing announcement Redis did not take, waiting for a worker to publish it; every
    statement on it is provisioning/announcement_outbox.py's (this declares the columns for the
    metadata). `tenant_id` NULL: every tenant (the "*" broadcast)."""

    __tablename__ = "announcement_outbox"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    aliases: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))  # [[kind, value], ...]
    created_at: Mapped[dt.datetime] = _now()
    due_at: Mapped[dt.datetime] = _now()  # the workers may publish it from then on
