"""What each tier looks like to both planes: a tenant's names on it, the role the router logs in
as, the pool it borrows from and the statements that bind a routed transaction to the tenant.

Pure: no I/O. The provisioner makes these objects exist (provisioning/tiers/); the router uses
them (Placement.pool_key, binding.py). A tier is one `TierLayout` here plus one module there.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from contracts import guard, identifiers
from contracts.identifiers import SCHEMA_GATEWAY_ROLE, SCHEMAS_DATABASE, SHARED_APP_ROLE, SHARED_DATABASE

if TYPE_CHECKING:
    from contracts.placement import Placement


class Tier(str, enum.Enum):
    dedicated = "dedicated"
    schema = "schema"
    shared = "shared"


class PoolKey(msgspec.Struct, frozen=True, kw_only=True):
    """One asyncpg pool per key. The placement version is part of it, so a moved tenant can
    never be served from a pool that still points at its old database."""

    host: str
    port: int
    database: str
    role: str
    version: int
    shared: bool = False  # serves many tenants: a per-tenant cap applies inside it
    sslmode: str | None = None  # the server's, from the catalog (None: libpq's default, prefer)


class TenantNames(NamedTuple):
    """A tenant's database, role and schema on a tier (what its placement row records)."""

    database: str
    role: str
    schema: str | None


class IncompletePlacement(ValueError):
    """A placement lacks a name its tier binds with (the message says which)."""


class TierLayout:
    """One tier's names and routing. `has_tenant_role`: the tenant has a role of its own here;
    `logs_in_as_tenant`: the router logs in as that role (its login is the binding)."""

    tier: Tier
    has_tenant_role: bool
    logs_in_as_tenant: bool

    def names(self, tenant_id: uuid.UUID | str) -> TenantNames:
        raise NotImplementedError

    def login_role(self, placement: Placement) -> str:
        """The role the router's pool logs in as."""
        return placement.role or ""

    def binding(self, placement: Placement, key: bytes, pid: int, issued_ms: int) -> str | None:
        """What a routed transaction runs right after BEGIN, in the same message, so as text;
        LOCAL, so COMMIT or ROLLBACK undoes it. None: the login binds already. Where tenants
        share a login, the binding is a ticket for backend `pid` (guard.py) that the tenant's
        own SQL cannot forge; `key` is guard.binding_key(SECRET_KEY)."""
        return None

    def pool_key(self, placement: Placement) -> PoolKey:
        """The one pool of the tier's shared database (version 0), as its login role; the tenant
        is bound per transaction. The placement is complete (Placement.pool_key checks)."""
        return PoolKey(host=placement.host, port=placement.port, database=placement.database,  # type: ignore[arg-type]
                       role=self.login_role(placement), version=0, shared=True, sslmode=placement.sslmode)


class DedicatedLayout(TierLayout):
    """A database and a login role per tenant: the role can reach no other database."""

    tier = Tier.dedicated
    has_tenant_role = True
    logs_in_as_tenant = True

    def names(self, tenant_id: uuid.UUID | str) -> TenantNames:
        return TenantNames(identifiers.tenant_database(tenant_id), identifiers.tenant_role(tenant_id), None)

    def pool_key(self, placement: Placement) -> PoolKey:
        """A pool of the tenant's own database, keyed by the placement version (a moved tenant
        never reaches its old database)."""
        return PoolKey(host=placement.host, port=placement.port, database=placement.database,  # type: ignore[arg-type]
                       role=placement.role, version=placement.version, sslmode=placement.sslmode)


class SchemaLayout(TierLayout):
    """A schema and a NOLOGIN role per tenant in the server's schemas database; the router logs
    in as the gateway (a member of every tenant role) and switches role and search_path."""

    tier = Tier.schema
    has_tenant_role = True
    logs_in_as_tenant = False

    def names(self, tenant_id: uuid.UUID | str) -> TenantNames:
        return TenantNames(SCHEMAS_DATABASE, identifiers.tenant_role(tenant_id), identifiers.tenant_schema(tenant_id))

    def login_role(self, placement: Placement) -> str:
        return SCHEMA_GATEWAY_ROLE

    def binding(self, placement: Placement, key: bytes, pid: int, issued_ms: int) -> str | None:
        """The role and search_path keep the tenant's own SQL to its schema; the ticket is what
        the policies on its tables check, since the gateway may SET ROLE to any tenant."""
        if not placement.schema:
            raise IncompletePlacement("no schema")
        return (f"SET LOCAL ROLE {identifiers.quote(placement.role)}; "
                f"SET LOCAL search_path = {identifiers.quote(placement.schema)}; "
                + guard.bind_statement(key, placement.tenant_id, pid, issued_ms))


class SharedLayout(TierLayout):
    """Rows tagged with tenant_id in the server's shared database, under forced RLS; the router
    logs in as the shared app role and binds with a ticket (guard.py; the tenant id is a uuid.UUID: msgspec
    checked its type when the placement was decoded)."""

    tier = Tier.shared
    has_tenant_role = False
    logs_in_as_tenant = False

    def names(self, tenant_id: uuid.UUID | str) -> TenantNames:
        return TenantNames(SHARED_DATABASE, SHARED_APP_ROLE, None)

    def binding(self, placement: Placement, key: bytes, pid: int, issued_ms: int) -> str | None:
        return guard.bind_statement(key, placement.tenant_id, pid, issued_ms)


LAYOUTS: Mapping[Tier, TierLayout] = {layout.tier: layout for layout in (DedicatedLayout(), SchemaLayout(),
                                                                         SharedLayout())}


def layout_of(tier: Tier | str) -> TierLayout:
    """The layout of a tier, by enum or by its name (the catalog stores the name)."""
    try:
        return LAYOUTS[Tier(tier)]
    except ValueError:
        raise identifiers.InvalidIdentifier(f"unknown tier {tier!r}") from None
