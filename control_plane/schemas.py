"""Request and response bodies: msgspec Structs, validated on the way in, never ORM rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from contracts.placement import Tier

# `(?!\n)$`: Python's `$` also matches before a final newline; msgspec uses re.search
SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,62}(?!\n)$"
# printable text: no control characters (PostgreSQL text cannot hold NUL), no leading/trailing space
_TEXT = r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?(?!\n)$"

Slug = Annotated[str, Meta(pattern=SLUG_PATTERN, min_length=2, max_length=63,
                           description="lowercase letters, digits and '-', starting with a letter")]


def spells_a_uuid(value: str) -> bool:
    """Whether `value` parses as a UUID (uuid.UUID ignores dashes anywhere and case). Such a slug is
    refused: an admin key that parses as a UUID is looked up as a tenant id, so the slug would name
    another tenant (or none) wherever a tenant is addressed "by id or slug"."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=_TEXT)]
ServerName = Annotated[str, Meta(pattern=SLUG_PATTERN, min_length=2, max_length=63)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateTenant(Strict):
    slug: Slug
    name: Name
    tier: Tier = Tier.dedicated
    server: ServerName | None = None
    from_backup: uuid.UUID | None = None  # made from this backup (of any tenant, any tier)


class UpdateTenant(Strict):
    name: Name | UnsetType = UNSET
    status: Literal["active", "suspended"] | UnsetType = UNSET


class TenantOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    slug: str
    name: str
    tier: str
    status: str
    server: str | None
    tenant_revision: str | None
    plan: str | None
    billing_status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    stripe_customer_id: str | None = None
    paid_until: dt.datetime | None = None
    past_due_since: dt.datetime | None = None
    billing_grace_until: dt.datetime | None = None  # past due: routers answer 402 from then on


class TenantAccepted(msgspec.Struct, kw_only=True):
    tenant: TenantOut
    operation_id: uuid.UUID


class DeleteAccepted(TenantAccepted, kw_only=True, omit_defaults=True):
    # with ?erase=true: the erasure's operation id (queued when the delete ends; until then
    # GET /v1/tenants/{id}/erasure says `requested`)
    erasure_id: uuid.UUID | None = None


class TenantPage(msgspec.Struct, kw_only=True):
    items: list[TenantOut]
    next_cursor: str | None


class StepOut(msgspec.Struct, kw_only=True):
    name: str
    state: str
    attempts: int
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class OperationOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID
    state: str
    steps: list[StepOut]
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    # GET /v1/operations/{id} only: what it did so far (a move: tables, rows and bytes copied)
    progress: dict[str, Any] | None = None
    cancel_requested: bool = False  # POST .../cancel was asked; the workers end it at the next step


class RegisterServer(Strict):
    name: ServerName
    dsn: Annotated[str, Meta(min_length=1, max_length=2000, description="admin DSN, postgresql://user:password@host:port/db")]
    capacity_databases: Annotated[int, Meta(ge=1, le=1_000_000)] = 500
    capacity_connections: Annotated[int, Meta(ge=1, le=100_000)] = 100


class ServerOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    host: str
    port: int
    admin_user: str
    admin_database: str
    dsn: str  # with the password masked
    capacity_databases: int
    capacity_connections: int
    status: str
    tenant_count: int
    created_at: dt.datetime


class ServerList(msgspec.Struct, kw_only=True):
    items: list[ServerOut]


# --- plans, features, users and memberships ---

# Plan and feature names. The service checks them again with re.fullmatch, because msgspec
# patterns use re.search, where '$' also matches before a trailing newline.
NAME_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
PlanName = Annotated[str, Meta(pattern=NAME_PATTERN, min_length=2, max_length=63,
                               description="lowercase letters, digits and '_', starting with a letter")]
FeatureName = Annotated[str, Meta(pattern=NAME_PATTERN, min_length=2, max_length=63,
                                  description="lowercase letters, digits and '_', starting with a letter")]
Description = Annotated[str, Meta(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
Email = Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$",
                            description="stored lowercased; unique")]
Role = Literal["owner", "admin", "member", "viewer"]
BillingStatus = Literal["ok", "past_due"]


# Stripe ids: a prefix, '_', then ASCII letters, digits and '_' (nothing else can name a price)
StripePriceId = Annotated[str, Meta(pattern=r"^(?:price|plan)_[A-Za-z0-9_]{1,250}$")]


class PlanBackup(Strict):
    """A plan's backup policy: schedule (5-field cron, UTC, or "off") and retention."""

    schedule: Annotated[str, Meta(min_length=1, max_length=100)]
    keep_days: Annotated[int, Meta(ge=0, le=36_500)]
    keep_last: Annotated[int, Meta(ge=0, le=10_000)]


class PutPlan(Strict):
    description: Description = ""
    features: Annotated[list[FeatureName], Meta(max_length=200)] = []
    rate_limit_per_minute: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None  # None: unlimited
    # the Stripe prices that put a subscription on this plan (customer.subscription.* events)
    stripe_price_ids: Annotated[list[StripePriceId], Meta(max_length=50)] = []
    tier: Tier | None = None  # a tenant put on the plan is moved to this tier
    tier_on_leave: Tier | None = None  # a tenant leaving it for a plan without a tier is moved here
    backup: PlanBackup | None = None  # None: its tenants follow BACKUP_SCHEDULE / _KEEP_DAYS / _KEEP_LAST


class PlanOut(msgspec.Struct, kw_only=True):
    name: str
    description: str
    features: list[str]
    rate_limit_per_minute: int | None
    stripe_price_ids: list[str]
    tier: str | None
    tier_on_leave: str | None
    backup: PlanBackup | None
    tenant_count: int
    created_at: dt.datetime
    updated_at: dt.datetime


class PlanList(msgspec.Struct, kw_only=True):
    items: list[PlanOut]


class SetTenantPlan(Strict):
    plan: PlanName | None


class SetBillingStatus(Strict):
    billing_status: BillingStatus


class SetFeature(Strict):
    enabled: bool


class FeatureOverrideOut(msgspec.Struct, kw_only=True):
    feature: str
    enabled: bool


class TenantFeatures(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    plan: str | None
    plan_features: list[str]
    overrides: list[FeatureOverrideOut]
    features: list[str]  # effective: the plan's features with the overrides applied


class CreateUser(Strict):
    email: Email
    name: Annotated[str, Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class UserOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str
    name: str
    created_at: dt.datetime


class PutMembership(Strict):
    role: Role


class MembershipOut(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    tenant_slug: str
    user_id: uuid.UUID
    email: str
    role: str
    created_at: dt.datetime


class MembershipList(msgspec.Struct, kw_only=True):
    items: list[MembershipOut]


class AddDomain(Strict):
    domain: Annotated[str, Meta(min_length=3, max_length=253, description="a host name, e.g. app.acme.com")]


class DomainChallengeOut(msgspec.Struct, kw_only=True):
    """The DNS record that proves the tenant controls the domain: create it, then verify."""

    type: Literal["TXT"] = "TXT"
    name: str  # _tenantplane-challenge.<domain>
    value: str


class DomainOut(msgspec.Struct, kw_only=True):
    domain: str
    tenant_id: uuid.UUID
    created_at: dt.datetime
    # verified: routed, its TXT challenge was found; unverified: routed on an admin's word
    # (DOMAIN_VERIFICATION=off); pending: not routed until verified
    status: Literal["verified", "unverified", "pending"]
    verified_at: dt.datetime | None = None
    challenge: DomainChallengeOut | None = None  # pending only
    checked_at: dt.datetime | None = None  # pending only: the last failed check


class DomainList(msgspec.Struct, kw_only=True):
    items: list[DomainOut]


class OperationList(msgspec.Struct, kw_only=True):
    items: list[OperationOut]


class OperationPage(msgspec.Struct, kw_only=True):
    items: list[OperationOut]
    next_cursor: str | None


RevisionName = Annotated[str, Meta(pattern=r"^(head|t[0-9]{4})(?!\n)$", description="'head' or a tenant revision id")]


class StartMigration(Strict):
    target: RevisionName = "head"
    tenants: Annotated[list[Annotated[str, Meta(max_length=100)]], Meta(max_length=100_000)] | None = None
    canary: Annotated[int, Meta(ge=0, le=10_000)] = 5
    wave_size: Annotated[int, Meta(ge=1, le=100_000)] = 50
    halt_on_error: bool = False


class MigrationTenantOut(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    slug: str
    wave: int
    state: str
    from_revision: str | None
    to_revision: str | None
    error: str | None


class MigrationRunOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    target_revision: str
    state: str
    current_wave: int
    canary_size: int
    wave_size: int
    halt_on_error: bool
    error: str | None
    counts: dict[str, int]
    created_at: dt.datetime
    finished_at: dt.datetime | None
    tenants: list[MigrationTenantOut]


class MoveTenant(Strict):
    tier: Tier
    server: ServerName | None = None  # default: the least loaded active server with room


class DrainResult(msgspec.Struct, kw_only=True):
    server: str
    status: str
    operation_ids: list[uuid.UUID]


# --- backups (control_plane/services/backups.py) ---


class CreateBackup(Strict):
    label: Name | None = None


class RestoreTenant(Strict):
    backup_id: uuid.UUID
    tier: Tier | None = None  # a deleted tenant only: the tier it comes back on (default: the one it was on)


class TableFiguresOut(msgspec.Struct, kw_only=True):
    name: str
    rows: int
    checksum: str
    method: str


class BackupOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    tier: str
    revision: str | None
    state: str
    trigger: str
    label: str | None
    size_bytes: int | None
    store: str
    key_version: int | None
    tables: list[TableFiguresOut]
    operation_id: uuid.UUID | None
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    verified_at: dt.datetime | None
    drill_result: dict | None


class BackupAccepted(msgspec.Struct, kw_only=True):
    backup: BackupOut
    operation_id: uuid.UUID


class BackupList(msgspec.Struct, kw_only=True):
    items: list[BackupOut]


class RestoreAccepted(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    backup_id: uuid.UUID
    operation_id: uuid.UUID


class KeyVersionOut(msgspec.Struct, kw_only=True):
    version: int
    wrapper_kind: str
    created_at: dt.datetime
    destroyed_at: dt.datetime | None


class DestroyKeys(Strict):
    confirm: Literal[True]  # crypto-shredding cannot be undone: asked for explicitly


class KeysDestroyed(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    destroyed_versions: int  # erased by this call (0: they were destroyed already)
    versions: list[KeyVersionOut]
    # the tenant's own KMS key (BACKUP_KMS_KEY_PER_TENANT), scheduled for deletion on this date
    kms_key_id: str | None = None
    kms_deletion_date: dt.datetime | None = None


class KeysRotated(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    current_version: int
    versions: list[KeyVersionOut]


class KeysRewrapped(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    rewrapped_versions: int  # moved by this call (0: every live version was under the wrapper already)
    wrapper_kind: str  # what wraps them now: "kms_tenant" (its own KMS key), "kms" or "local"
    versions: list[KeyVersionOut]
    kms_key_id: str | None = None  # the tenant's own KMS key, when that is the wrapper


# -- the admins' lists (issue #14) ------------------------------------------------------------------
class MigrationRunSummary(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    target_revision: str
    state: str
    current_wave: int
    error: str | None
    counts: dict[str, int]
    created_at: dt.datetime
    finished_at: dt.datetime | None


class MigrationRunPage(msgspec.Struct, kw_only=True):
    items: list[MigrationRunSummary]
    next_cursor: str | None


class UserPage(msgspec.Struct, kw_only=True):
    items: list[UserOut]
    next_cursor: str | None


class AuditEntryOut(msgspec.Struct, kw_only=True):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    details: dict[str, object]


class AuditPage(msgspec.Struct, kw_only=True):
    items: list[AuditEntryOut]
    next_cursor: str | None


class ServerFill(msgspec.Struct, kw_only=True):
    name: str
    status: str
    tenants: int
    capacity_databases: int
    fill: float  # tenants / capacity_databases
    spares: int | None = None  # spare databases the latest reconciliation report found there; None: no report


class Overview(msgspec.Struct, kw_only=True):
    tenants_by_status: dict[str, int]
    tenants_by_tier: dict[str, int]
    tenants_behind_head: int
    head_revision: str
    operations_by_state: dict[str, int]
    failed_operations: int
    running_migrations: int
    servers: list[ServerFill]
    spares_counted_at: dt.datetime | None = None  # when that report finished (spares live on the servers)


# -- admin keys ------------------------------------------------------------------------------------
AdminKeyName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}(?!\n)$",
                                   description="lowercase letters, digits, '.', '_' or '-'; the audit actor is api-key:<name>")]
AdminScope = Literal["tenants:read", "tenants:write", "billing", "servers", "admin"]


class CreateAdminKey(Strict):
    name: AdminKeyName
    scopes: Annotated[list[AdminScope], Meta(min_length=1, max_length=5)]
    expires_at: dt.datetime | None = None


class AdminKeyOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: dt.datetime
    created_by: str | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class AdminKeyCreated(msgspec.Struct, kw_only=True):
    key: AdminKeyOut
    token: str  # shown once: only its digest is stored


class AdminKeyList(msgspec.Struct, kw_only=True):
    items: list[AdminKeyOut]


EventType = Literal["tenant.created", "tenant.moved", "tenant.restored", "tenant.suspended", "tenant.resumed",
                    "tenant.deleted"]


EventDeliveryState = Literal["pending", "delivered", "abandoned"]


class EventDeliveryOut(msgspec.Struct, kw_only=True):
    """Where the event's webhook delivery stands: `pending` (also when no webhook takes it),
    `delivered` (a 2xx), `abandoned` (no 2xx within EVENTS_GIVE_UP_AFTER_HOURS; POST .../redeliver)."""

    state: EventDeliveryState
    attempts: int
    last_error: str | None  # "HTTP 503" or the transport error's name
    delivered_at: dt.datetime | None
    abandoned_at: dt.datetime | None


class EventOut(msgspec.Struct, kw_only=True):
    """A lifecycle event (provisioning/events.py): the same shape a webhook receiver gets, less
    `attempt`, plus its delivery."""

    id: int
    type: str
    tenant_id: uuid.UUID
    operation_id: uuid.UUID
    occurred_at: dt.datetime
    data: dict[str, object]  # slug, tier, server; a move's `from`, a billing suspension's `reason`
    delivery: EventDeliveryOut


class RedeliverEvents(Strict):
    """Which abandoned events to send again: all of a tenant's, of a type, or both (at most `limit`,
    the oldest first; ask again for more)."""

    tenant: Annotated[str, Meta(min_length=1, max_length=100)] | None = None  # id or slug
    type: EventType | None = None
    limit: Annotated[int, Meta(ge=1, le=500)] = 100


class EventsRedelivered(msgspec.Struct, kw_only=True):
    ids: list[int]  # pending again, oldest first
    more: bool  # more abandoned events match: ask again


class EventPage(msgspec.Struct, kw_only=True):
    items: list[EventOut]
    next_cursor: str | None  # newest first: the next (older) page
    next_after: int | None  # with `after`: what to ask with next (the last id seen; the same when none is new)


class ErasurePlace(msgspec.Struct, kw_only=True):
    place: str  # database, backups, store_objects, data_key, redis, stripe_customer, domains, memberships, audit, catalog
    done: bool
    at: dt.datetime | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)  # what was removed, and what remains until when


class ErasureReport(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    status: str  # requested | completed
    requested_at: dt.datetime
    completed_at: dt.datetime | None
    operation_id: uuid.UUID | None
    places: list[ErasurePlace]
