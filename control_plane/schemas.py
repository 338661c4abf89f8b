"""Request and response bodies: msgspec Structs, validated on the way in, never ORM rows."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from tenant_router.contracts import Tier

SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
# printable text: no control characters (PostgreSQL text cannot hold NUL), no leading/trailing space
_TEXT = r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?$"

Slug = Annotated[str, Meta(pattern=SLUG_PATTERN, min_length=2, max_length=63,
                           description="lowercase letters, digits and '-', starting with a letter")]
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=_TEXT)]
ServerName = Annotated[str, Meta(pattern=SLUG_PATTERN, min_length=2, max_length=63)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CreateTenant(Strict):
    slug: Slug
    name: Name
    tier: Tier = Tier.dedicated
    server: ServerName | None = None


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
    created_at: dt.datetime
    updated_at: dt.datetime


class TenantAccepted(msgspec.Struct, kw_only=True):
    tenant: TenantOut
    operation_id: uuid.UUID


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
