"""Tenant use cases: each is one catalog transaction (write + audit + queued operation)."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from msgspec import UNSET
from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.placement import TenantStatus
from control_plane import errors
from control_plane.catalog.db import single_statement
from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import Backup, DatabaseServer, Placement, Tenant
from control_plane.catalog.states import ADMIN_SETTABLE, can_transition
from control_plane.schemas import (
    CreateTenant,
    DeleteAccepted,
    MoveTenant,
    TenantAccepted,
    TenantOut,
    TenantPage,
    UpdateTenant,
    spells_a_uuid,
)
from control_plane.services import audit, notify
from control_plane.services.erasure import ask_with_delete, request_in
from control_plane.services.lookup import parse_tenant_key
from migrations.tree import TenantTree
from provisioning import queue

RESERVED_SLUGS = frozenset({
    "www", "app", "api", "admin", "administrator", "root", "mail", "email", "smtp", "imap", "pop",
    "ftp", "ns", "ns1", "ns2", "dns", "static", "assets", "cdn", "media", "status", "docs", "help",
    "support", "billing", "auth", "login", "logout", "signup", "register", "account", "accounts",
    "dashboard", "console", "system", "internal", "health", "metrics", "tenant", "tenants", "public",
    "localhost", "test", "dev", "staging", "prod", "production", "webhooks", "security", "postgres",
})



def _tenant_query() -> Select:
    return (
        select(Tenant, DatabaseServer.name.label("server_name"), Placement.tenant_revision)
        .outerjoin(Placement, Placement.tenant_id == Tenant.id)
        .outerjoin(DatabaseServer, DatabaseServer.id == Placement.server_id)
    )


def _to_out(row: Any) -> TenantOut:
    t: Tenant = row[0]
    return TenantOut(id=t.id, slug=t.slug, name=t.name, tier=t.tier, status=t.status,
                     server=row.server_name, tenant_revision=row.tenant_revision,
                     plan=t.plan, billing_status=t.billing_status,
                     created_at=t.created_at, updated_at=t.updated_at, stripe_customer_id=t.stripe_customer_id,
                     paid_until=t.paid_until, past_due_since=t.past_due_since,
                     billing_grace_until=t.billing_grace_until)


def _encode_cursor(tenant_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(tenant_id.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise errors.InvalidCursor("the cursor is not one this API returned") from None


# A new tenant: the row, its create operation, the audit row, and a NOTIFY that workers hear at
# commit (when the operation is visible). The unique index on live slugs refuses a taken slug.
# (the kind is `clone_tenant` for a tenant made from a backup, provisioning/clones.py)
_QUEUE_CREATE = queue.enqueue_clause(id=":operation_id", kind=":kind", tenant_id="t.id",
                                     params=":params", source="t")
_CREATE_TENANT = text(
    "WITH t AS (INSERT INTO tenants (id, slug, name, tier, status) VALUES (:id, :slug, :name, :tier, :status) "
    "  RETURNING id, slug, name, tier, status, plan, billing_status, created_at, updated_at), "
    f"op AS ({_QUEUE_CREATE}), "
    "audit AS (INSERT INTO audit_log (actor, action, target_type, target_id, details) "
    "  SELECT :actor, :action, 'tenant', t.id::text, :details FROM t) "
    f"SELECT t.*, {queue.WAKE_WORKERS} FROM t"
).bindparams(bindparam("params", type_=JSONB), bindparam("details", type_=JSONB))


async def _open_operation(session: AsyncSession, tenant_id: uuid.UUID) -> queue.OpenOperation | None:
    return await queue.open_operation(DriverSQL(await session.connection()), tenant_id)


async def _check_clonable(conn: Any, backup_id: uuid.UUID, newest: str) -> None:
    """A clone starts from a succeeded backup at a revision this code knows (of any tenant, any tier;
    the source tenant may be deleted since, its keys may not)."""
    backup = (await conn.execute(select(Backup.state, Backup.revision).where(Backup.id == backup_id))).first()
    if backup is None:
        raise errors.UnknownBackup(f"no backup {backup_id}")
    if backup.state != "succeeded":
        raise errors.BackupNotRestorable(f"the backup is {backup.state}; only a succeeded one can be cloned")
    # revision ids are tNNNN, increasing: compared as text, as routers do
    if backup.revision is not None and backup.revision > newest:
        raise errors.BackupTooNew(f"the backup is at {backup.revision}; this code knows up to {newest}")


class TenantService:
    def __init__(self, sessions: async_sessionmaker, tenant_tree: TenantTree, redis: Any = None) -> None:
        self.sessions = sessions
        self.tenant_tree = tenant_tree  # a clone's backup must be at a revision this tree knows
        self.redis = redis

    async def _row(self, session: AsyncSession, key: str, *, lock: bool = False) -> Any:
        parsed = parse_tenant_key(key)
        if parsed is None:
            raise errors.TenantNotFound(f"no tenant {key[:100]!r}")
        query = _tenant_query()
        if isinstance(parsed, uuid.UUID):
            query = query.where(Tenant.id == parsed)
        else:
            query = query.where(Tenant.slug == parsed, Tenant.status != TenantStatus.deleted.value)
        if lock:
            query = query.with_for_update(of=Tenant)
        row = (await session.execute(query)).first()
        if row is None:
            raise errors.TenantNotFound(f"no tenant {key!r}")
        return row

    @staticmethod
    async def _refuse_if_busy(session: AsyncSession, tenant_id: uuid.UUID) -> None:
        open_op = await _open_operation(session, tenant_id)
        if open_op is not None:
            raise errors.OperationInProgress(
                f"operation {open_op.id} ({open_op.kind}) is still running for this tenant",
                operation_id=str(open_op.id))

    async def get(self, key: str) -> TenantOut:
        async with self.sessions() as session:
            return _to_out(await self._row(session, key))

    async def list(self, status: str | None, limit: int, cursor: str | None) -> TenantPage:
        query = _tenant_query().order_by(Tenant.id).limit(limit + 1)
        if status:
            query = query.where(Tenant.status == status)
        if cursor:
            query = query.where(Tenant.id > _decode_cursor(cursor))
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        items = [_to_out(r) for r in rows[:limit]]
        next_cursor = _encode_cursor(items[-1].id) if len(rows) > limit else None
        return TenantPage(items=items, next_cursor=next_cursor)

    async def create(self, actor: str, body: CreateTenant) -> TenantAccepted:
        """The tenant, its create operation, the audit row and the workers' wake-up, in one
        statement (atomic on its own, so no BEGIN/COMMIT round trips: this is the onboarding path)."""
        if body.slug in RESERVED_SLUGS:
            raise errors.SlugReserved(f"{body.slug!r} is reserved")
        if spells_a_uuid(body.slug):
            raise errors.SlugReserved("a slug must not spell a UUID (tenants are also addressed by id)")
        tenant_id, operation_id = uuid.uuid4(), uuid.uuid4()
        async with self.sessions() as session:
            conn = await single_statement(session)
            params: dict[str, Any] = {}
            if body.server is not None:  # servers are never deleted: the id stays good
                server_id = await conn.scalar(select(DatabaseServer.id).where(DatabaseServer.name == body.server))
                if server_id is None:
                    raise errors.UnknownServer(f"no database server named {body.server!r}")
                params["server_id"] = str(server_id)
            details: dict[str, Any] = {"slug": body.slug, "tier": body.tier.value, "operation_id": str(operation_id)}
            if body.from_backup is not None:
                await _check_clonable(conn, body.from_backup, self.tenant_tree.head())
                params["backup_id"] = details["from_backup"] = str(body.from_backup)
            try:
                row = (await conn.execute(_CREATE_TENANT, {
                    "id": tenant_id, "slug": body.slug, "name": body.name, "tier": body.tier.value,
                    "status": TenantStatus.provisioning.value, "operation_id": operation_id, "params": params,
                    "kind": "create_tenant" if body.from_backup is None else "clone_tenant",
                    "action": "tenant.create" if body.from_backup is None else "tenant.clone",
                    "actor": actor, "details": details,
                })).one()
            except IntegrityError:
                raise errors.SlugTaken(f"slug {body.slug!r} is already in use") from None
        out = TenantOut(id=row.id, slug=row.slug, name=row.name, tier=row.tier, status=row.status, server=None,
                        tenant_revision=None, plan=row.plan, billing_status=row.billing_status,
                        created_at=row.created_at, updated_at=row.updated_at)
        return TenantAccepted(tenant=out, operation_id=operation_id)

    async def update(self, actor: str, key: str, body: UpdateTenant) -> TenantOut:
        async with self.sessions() as session, session.begin():
            tenant: Tenant = (await self._row(session, key, lock=True))[0]
            changes: dict[str, Any] = {}
            if body.name is not UNSET and body.name != tenant.name:
                changes["name"] = body.name
            if body.status is not UNSET and body.status != tenant.status:
                current, target = TenantStatus(tenant.status), TenantStatus(body.status)
                if target not in ADMIN_SETTABLE or not can_transition(current, target):
                    raise errors.InvalidTransition(
                        f"a tenant that is {current.value!r} cannot become {target.value!r}",
                        current=current.value)
                await self._refuse_if_busy(session, tenant.id)
                changes["status"] = body.status
                # suspend and resume take effect at once, but are recorded as operations like any
                # other lifecycle change (one step, already done)
                kind = "suspend_tenant" if target is TenantStatus.suspended else "resume_tenant"
                await queue.record_done(DriverSQL(await session.connection()), uuid.uuid4(), kind, tenant.id,
                                        "set_status")
            if changes:
                await session.execute(update(Tenant).where(Tenant.id == tenant.id)
                                      .values(**changes, updated_at=func.now()))
                audit.record(session, actor, "tenant.update", "tenant", tenant.id, **changes)
            noted = await notify.note(self.redis, session, [tenant.id]) if "status" in changes else []
            out = _to_out((await session.execute(_tenant_query().where(Tenant.id == tenant.id))).one())
        if "status" in changes:
            await notify.placement_changed(self.redis, out.id, noted=noted)
        return out

    async def delete(self, actor: str, key: str, *, erase: bool = False) -> DeleteAccepted:
        """Queue the delete; with `erase`, the erasure too, to be queued by the delete's finish."""
        async with self.sessions() as session, session.begin():
            tenant: Tenant = (await self._row(session, key, lock=True))[0]
            if erase and tenant.status == TenantStatus.deleted.value:
                return await self._erase_deleted(session, actor, tenant)
            open_op = await _open_operation(session, tenant.id)
            if open_op is not None:
                if open_op.kind == "delete_tenant":  # asked twice: same answer (an erasure added if asked now)
                    erasure_id = await ask_with_delete(session, actor, tenant.id) if erase else None
                    out = _to_out((await session.execute(_tenant_query().where(Tenant.id == tenant.id))).one())
                    return DeleteAccepted(tenant=out, operation_id=open_op.id, erasure_id=erasure_id)
                raise errors.OperationInProgress(
                    f"operation {open_op.id} ({open_op.kind}) is still running for this tenant",
                    operation_id=str(open_op.id))
            current = TenantStatus(tenant.status)
            if current is TenantStatus.deleted:
                raise errors.TenantNotFound(f"tenant {key!r} is deleted")
            if not can_transition(current, TenantStatus.deleting):
                raise errors.InvalidTransition(f"a tenant that is {current.value!r} cannot be deleted now",
                                               current=current.value)
            await session.execute(update(Tenant).where(Tenant.id == tenant.id)
                                  .values(status=TenantStatus.deleting.value, updated_at=func.now()))
            operation = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant.id)
            await queue.enqueue(DriverSQL(await session.connection()), "delete_tenant", operation)
            audit.record(session, actor, "tenant.delete", "tenant", tenant.id, operation_id=str(operation.id))
            erasure_id = await ask_with_delete(session, actor, tenant.id) if erase else None
            noted = await notify.note(self.redis, session, [tenant.id])
            await session.flush()
            out = _to_out((await session.execute(_tenant_query().where(Tenant.id == tenant.id))).one())
        await notify.placement_changed(self.redis, out.id, noted=noted)
        return DeleteAccepted(tenant=out, operation_id=operation.id, erasure_id=erasure_id)

    async def _erase_deleted(self, session: AsyncSession, actor: str, tenant: Tenant) -> DeleteAccepted:
        """`?erase=true` for a tenant deleted already (a retry of the request, or a delete from
        before): its erasure as `POST .../erasure` would have it, with the delete that was done."""
        row, _ = await request_in(session, actor, tenant)
        deleted_by = await queue.last_of_kind(DriverSQL(await session.connection()), tenant.id, "delete_tenant")
        out = _to_out((await session.execute(_tenant_query().where(Tenant.id == tenant.id))).one())
        return DeleteAccepted(tenant=out, operation_id=deleted_by or row.operation_id, erasure_id=row.operation_id)



    async def move(self, actor: str, key: str, body: MoveTenant) -> TenantAccepted:
        """Queue a move to another tier and/or server; the worker pauses writes, copies, verifies
        and switches (provisioning/moves.py)."""
        async with self.sessions() as session, session.begin():
            row = await self._row(session, key, lock=True)
            tenant: Tenant = row[0]
            await self._refuse_if_busy(session, tenant.id)
            if tenant.status != TenantStatus.active.value:
                raise errors.InvalidTransition(f"only an active tenant can move; this one is {tenant.status!r}",
                                               current=tenant.status)
            if body.server is None and body.tier.value == tenant.tier:
                # refused now rather than queued: the worker would look for "another server" and fail
                # five times; a move within the tier names the server it goes to
                raise errors.NothingToMove(f"the tenant is on the {tenant.tier} tier already; "
                                           "name a server to move it within the tier")
            params: dict[str, Any] = {"tier": body.tier.value}
            if body.server is not None:
                server = await session.scalar(select(DatabaseServer).where(DatabaseServer.name == body.server))
                if server is None:
                    raise errors.UnknownServer(f"no database server named {body.server!r}")
                params["server_id"] = str(server.id)
                if body.tier.value == tenant.tier and body.server == row.server_name:
                    raise errors.NothingToMove(f"the tenant is on the {tenant.tier} tier of {body.server} already")
            operation = queue.NewOperation(id=uuid.uuid4(), tenant_id=tenant.id, params=params)
            await queue.enqueue(DriverSQL(await session.connection()), "move_tenant", operation)
            audit.record(session, actor, "tenant.move", "tenant", tenant.id, operation_id=str(operation.id), **params)
            await session.flush()
            out = _to_out(row)
        return TenantAccepted(tenant=out, operation_id=operation.id)
