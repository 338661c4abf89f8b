"""The fleet at a glance for platform admins: tenants by status and tier, tenants behind the tenant
head revision, operations by state, running fleet migrations, and each server's fill and spare
databases. One read-only transaction, so the counts agree with each other. Spares live on the servers,
not in the catalog: their counts are those of the latest reconciliation report (with its time), which
every worker round and `POST /v1/reconciliation` refresh."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from control_plane.catalog.driver_sql import DriverSQL
from control_plane.catalog.models import DatabaseServer, MigrationRun, Placement, ReconciliationReport, Tenant
from control_plane.schemas import Overview, ServerFill
from migrations.tree import TenantTree
from provisioning import queue


class OverviewService:
    def __init__(self, sessions: async_sessionmaker, tenant_tree: TenantTree) -> None:
        self.sessions = sessions
        self.head = tenant_tree.head()

    async def get(self) -> Overview:
        live = Tenant.status != "deleted"
        async with self.sessions() as session, session.begin():
            by_status = dict((await session.execute(
                select(Tenant.status, func.count()).where(live).group_by(Tenant.status))).all())
            by_tier = dict((await session.execute(
                select(Tenant.tier, func.count()).where(live).group_by(Tenant.tier))).all())
            behind = await session.scalar(
                select(func.count()).select_from(Placement).join(Tenant, Tenant.id == Placement.tenant_id)
                .where(live, Placement.tenant_revision.is_distinct_from(self.head)))
            operations = await queue.count_by_state(DriverSQL(await session.connection()))
            running = await session.scalar(select(func.count()).select_from(MigrationRun)
                                           .where(MigrationRun.state == "running"))
            count = (select(func.count()).select_from(Placement)
                     .where(Placement.server_id == DatabaseServer.id).scalar_subquery())
            servers = (await session.execute(select(DatabaseServer, count).order_by(DatabaseServer.name))).all()
            latest = (await session.execute(
                select(ReconciliationReport.finished_at, ReconciliationReport.report)
                .where(ReconciliationReport.finished_at.is_not(None))
                .order_by(ReconciliationReport.finished_at.desc()).limit(1))).first()
        spares: dict[str, int] | None = None
        if latest is not None:
            checked = set(latest.report.get("servers_checked") or [])
            spares = {name: 0 for name in checked}
            for spare in latest.report.get("spares") or []:
                spares[spare["server"]] = spares.get(spare["server"], 0) + 1
        return Overview(
            tenants_by_status=by_status, tenants_by_tier=by_tier, tenants_behind_head=behind or 0,
            head_revision=self.head, operations_by_state=operations, failed_operations=operations.get("failed", 0),
            running_migrations=running or 0,
            servers=[ServerFill(name=s.name, status=s.status, tenants=n, capacity_databases=s.capacity_databases,
                                fill=round(n / s.capacity_databases, 4) if s.capacity_databases else 1.0,
                                spares=None if spares is None else spares.get(s.name))
                     for s, n in servers],
            spares_counted_at=latest.finished_at if latest is not None else None)
