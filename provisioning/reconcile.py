"""The reconciler: compares the catalog with what every server holds, and reports. It never drops
anything on its own; an operator decides (an orphan may be a tenant restored by hand).

Findings:
- `orphan_database`, `orphan_role`, `orphan_schema`: an object with our prefix that no placement
  on that server accounts for; `orphan_rows`: shared-tier rows of a tenant placed elsewhere or gone.
- `missing_database`, `missing_role`, `missing_schema`: a placement of a settled tenant (active,
  suspended or maintenance) whose object is not on its server.
- `revision_drift`: the revision recorded in the catalog differs from the one the database holds.
- `restore_leftover`: what a restore, a clone or a drill makes for a while (`tp_rs_<tenant>` staging
  and `tp_ro_<tenant>` old databases, `tp_so_<tenant>` old schemas, `tp_vd_<backup>` drill scratch
  databases, `tp_restore_<operation>` login roles pg_restore ran as) still there with no open
  operation that could own it: one that failed and could not clean up, or was killed for good.
  Its `detail` says which it is.
- `login_drift`: a login role the router uses (a dedicated tenant's, the gateway, the shared app
  role) has another password than its derived one, or settings of its own (login_drift.py). The
  one thing the reconciler changes: such a role is put back (derived password, no settings), since
  nothing else can stop a login role from altering itself; the finding says so.
- `erased_leftover` (server `catalog`): an erased tenant (tenant_erasures, completed) that the catalog
  still holds something of (backups rows, live wrapped keys, memberships, domains, an untombstoned slug).
- `erased_leftover` / `deleted_leftover` (server: a server's name, `store` or `redis`; leftovers.py):
  what a server still holds of an erased or deleted tenant (an orphan or a restore's leftover that
  names it; the detail starts with that kind), an erased tenant's objects still in the backup store,
  Redis keys naming either. `leftovers_checked` says how many such tenants were looked for.
- `orphan_kms_key`, `missing_kms_key` (server `kms`; kms_leftovers.py, with per-tenant KMS keys
  only): a key of the KMS account tagged with a tenant id that the catalog does not record, and a
  recorded key KMS does not list; an erased tenant's key that KMS holds not pending deletion is an
  `erased_leftover` there.
- servers that could not be reached are listed apart, and so are the store, Redis and KMS
  (`places_unreachable`): nothing about them is concluded.

Spare databases (`tp_spare_*`, spares.py) belong to no tenant and are no orphans: they are listed
apart, with the revision they are marked with (None while one is being made, or after a worker
died making it: the next refill drops it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from contracts import identifiers
from contracts.tiers import layout_of
from provisioning import kms_leftovers, leftovers, probes
from provisioning.backups.objects import BackupStore
from provisioning.backups.tenant_kms import TenantKmsError, TenantKmsKeys
from provisioning.drills import scratch_database
from provisioning.findings import Finding
from provisioning.login_drift import repair_drifted_logins
from provisioning.sealing import SecretBox
from provisioning.servers import SERVER_COLUMNS, ServerInfo, admin_connection
from provisioning.spares import list_spares
from provisioning.tiers.shared import tenant_tables
from provisioning.tiers.snapshots import old_database, old_schema, staging_database

log = logging.getLogger("tenantplane.reconciler")

SETTLED = ("active", "suspended", "maintenance")

# the temporary names of restores, clones and drills, by prefix: what each is, for the report
_LEFTOVER_DATABASES = {"tp_rs_": "staging database of a restore or a clone of tenant",
                       "tp_ro_": "old database set aside by a restore of tenant",
                       "tp_vd_": "scratch database of a drill of backup"}
_LEFTOVER_SCHEMAS = {"tp_so_": "old schema set aside by a restore of tenant"}
# operations that own such names while they are queued or running (a failed one has cleaned up
# what it could already: what is left is reported)
_OWNERS = ("restore_tenant", "clone_tenant", "revive_tenant")


class Spare(msgspec.Struct, frozen=True, kw_only=True):
    server: str
    database: str
    revision: str | None


class Report(msgspec.Struct, kw_only=True):
    started_at: dt.datetime
    finished_at: dt.datetime
    servers_checked: list[str]
    unreachable: list[str]
    findings: list[Finding]
    spares: list[Spare] = []
    leftovers_checked: leftovers.Checked = leftovers.Checked()
    places_checked: list[str] = []  # "store", "redis", "kms": searched for what deleted and erased tenants left
    places_unreachable: list[str] = []

    @property
    def clean(self) -> bool:
        return not self.findings and not self.unreachable and not self.places_unreachable


def _tenant_of(name: str, prefix: str) -> str | None:
    try:
        return str(uuid.UUID(hex=name[len(prefix):]))
    except ValueError:
        return None


def _busy_names(open_ops: list[dict[str, Any]]) -> set[str]:
    """The temporary names that open operations may be using right now (not leftovers)."""
    busy: set[str] = set()
    for op in open_ops:
        if op.get("id") is not None and (op["kind"] in _OWNERS or op["kind"] == "verify_backup"):
            busy.add(identifiers.restore_role(op["id"]))  # the login pg_restore runs as (steps/restore_roles.py)
        if op["kind"] in _OWNERS:
            tid = op["tenant_id"]
            busy |= {staging_database(tid), old_database(tid), old_schema(tid)}
        elif op["kind"] == "verify_backup" and op["backup_id"]:
            busy.add(scratch_database(op["backup_id"]))
    return busy


def _leftover(name: str, prefixes: dict[str, str]) -> tuple[str | None, str] | None:
    """(the tenant id it names, or None for a drill's backup id; the detail) of a temporary name."""
    for prefix, what in prefixes.items():
        if name.startswith(prefix):
            named = _tenant_of(name, prefix)
            return (None if prefix == "tp_vd_" else named), f"{what} {named}"
    return None


async def _check_server(server: ServerInfo, box: SecretBox, placements: list[dict[str, Any]],
                        busy: frozenset[str] = frozenset()) -> tuple[list[Finding], list[Spare]]:
    out: list[Finding] = []
    add = lambda kind, obj, tid=None, detail="": out.append(  # noqa: E731
        Finding(kind=kind, server=server.name, object=obj, tenant_id=tid, detail=detail))
    mine = [p for p in placements if p["server_id"] == server.id]
    known = {str(p["tenant_id"]) for p in mine}
    settled = [p for p in mine if p["status"] in SETTLED]
    db_prefix, role_prefix, schema_prefix = (f"{identifiers.PREFIX}db_", f"{identifiers.PREFIX}role_",
                                             f"{identifiers.PREFIX}s_")
    async with admin_connection(server, box) as conn:
        databases = {r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", db_prefix)}
        roles = {r["rolname"] for r in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", role_prefix)}
        temporary = sorted(r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, 'tp_rs_') OR starts_with(datname, 'tp_ro_') "
            "OR starts_with(datname, 'tp_vd_')"))
        restore_roles = sorted(r["rolname"] for r in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", identifiers.RESTORE_ROLE_PREFIX))
        has_schemas_db = await probes.database_exists(conn, identifiers.SCHEMAS_DATABASE)
        has_shared_db = await probes.database_exists(conn, identifiers.SHARED_DATABASE)
        spare_list = [Spare(server=server.name, database=name, revision=revision)
                      for name, revision in await list_spares(conn)]
        logins = [p["role_name"] for p in mine if layout_of(p["tier"]).logs_in_as_tenant and p["role_name"]]
        for role, detail in await repair_drifted_logins(conn, box, logins + [identifiers.SCHEMA_GATEWAY_ROLE,
                                                                            identifiers.SHARED_APP_ROLE]):
            add("login_drift", role, _tenant_of(role, role_prefix), f"{detail}; put back")

    for name in sorted(databases):
        if _tenant_of(name, db_prefix) not in known:
            add("orphan_database", name, _tenant_of(name, db_prefix))
    for name in temporary:
        if name not in busy and (found := _leftover(name, _LEFTOVER_DATABASES)):
            add("restore_leftover", name, found[0], found[1])
    for name in restore_roles:
        if name not in busy:
            add("restore_leftover", name, None,
                f"login role of restore, clone or drill operation {_tenant_of(name, identifiers.RESTORE_ROLE_PREFIX)}")
    for name in sorted(roles):
        if _tenant_of(name, role_prefix) not in known:
            add("orphan_role", name, _tenant_of(name, role_prefix))
    for p in settled:
        tid = str(p["tenant_id"])
        if layout_of(p["tier"]).has_tenant_role and p["role_name"] not in roles:
            add("missing_role", p["role_name"], tid)
        if p["tier"] == "dedicated":
            if p["database_name"] not in databases:
                add("missing_database", p["database_name"], tid)
            else:
                actual = await probes.revision(server, box, p["database_name"])
                if actual != p["tenant_revision"]:
                    add("revision_drift", p["database_name"], tid, f"catalog {p['tenant_revision']}, database {actual}")

    schema_placements = [p for p in mine if p["tier"] == "schema"]
    if has_schemas_db:
        async with admin_connection(server, box, identifiers.SCHEMAS_DATABASE) as conn:
            schemas = {r["nspname"] for r in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", schema_prefix)}
            old_schemas = sorted(r["nspname"] for r in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'tp_so_')"))
        for name in old_schemas:
            if name not in busy and (found := _leftover(name, _LEFTOVER_SCHEMAS)):
                add("restore_leftover", name, found[0], found[1])
        for name in sorted(schemas):
            if _tenant_of(name, schema_prefix) not in known:
                add("orphan_schema", name, _tenant_of(name, schema_prefix))
        for p in schema_placements:
            if p["status"] not in SETTLED:
                continue
            if p["schema_name"] not in schemas:
                add("missing_schema", p["schema_name"], str(p["tenant_id"]))
                continue
            actual = await probes.revision(server, box, identifiers.SCHEMAS_DATABASE, p["schema_name"])
            if actual != p["tenant_revision"]:
                add("revision_drift", p["schema_name"], str(p["tenant_id"]),
                    f"catalog {p['tenant_revision']}, schema {actual}")
    else:
        for p in schema_placements:
            if p["status"] in SETTLED:
                add("missing_database", identifiers.SCHEMAS_DATABASE, str(p["tenant_id"]))

    shared_placements = {str(p["tenant_id"]): p for p in mine if p["tier"] == "shared"}
    if has_shared_db:
        async with admin_connection(server, box, identifiers.SHARED_DATABASE) as conn:
            seen: dict[str, set[str]] = {}
            for table in await tenant_tables(conn):
                for r in await conn.fetch(f"SELECT DISTINCT tenant_id FROM public.{identifiers.quote(table)}"):
                    seen.setdefault(str(r["tenant_id"]), set()).add(table)
        for tid, tables in sorted(seen.items()):
            if tid not in shared_placements:
                add("orphan_rows", identifiers.SHARED_DATABASE, tid, "tables: " + ", ".join(sorted(tables)))
        actual = await probes.revision(server, box, identifiers.SHARED_DATABASE)
        for tid, p in shared_placements.items():
            if p["status"] in SETTLED and actual != p["tenant_revision"]:
                add("revision_drift", identifiers.SHARED_DATABASE, tid, f"catalog {p['tenant_revision']}, database {actual}")
    else:
        for tid, p in shared_placements.items():
            if p["status"] in SETTLED:
                add("missing_database", identifiers.SHARED_DATABASE, tid)
    return out, spare_list


# what the catalog may still hold of an erased tenant (erasure.py removes each); one row per kind found
_ERASED_LEFTOVERS = """
SELECT e.tenant_id, w.what FROM tenant_erasures e CROSS JOIN LATERAL (
    SELECT 'backups' AS what WHERE EXISTS (SELECT 1 FROM backups b WHERE b.tenant_id = e.tenant_id)
    UNION ALL SELECT 'data_key' WHERE EXISTS (SELECT 1 FROM tenant_keys k WHERE k.tenant_id = e.tenant_id
                                              AND k.wrapped_key IS NOT NULL)
    -- its own KMS key (or a crashed creation's possible one) not scheduled for deletion
    UNION ALL SELECT 'kms_key' WHERE EXISTS (SELECT 1 FROM tenant_kms_keys q WHERE q.tenant_id = e.tenant_id
                                             AND q.deletion_date IS NULL)
    UNION ALL SELECT 'memberships' WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = e.tenant_id)
    UNION ALL SELECT 'domains' WHERE EXISTS (SELECT 1 FROM tenant_domains d WHERE d.tenant_id = e.tenant_id)
                                  OR EXISTS (SELECT 1 FROM domain_challenges c WHERE c.tenant_id = e.tenant_id)
    UNION ALL SELECT 'catalog' WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = e.tenant_id
                                             AND (t.slug <> t.id::text OR t.name <> ''))
) w WHERE e.completed_at IS NOT NULL ORDER BY 1, 2
"""


async def _erased_leftovers(catalog: asyncpg.Pool | asyncpg.Connection) -> list[Finding]:
    return [Finding(kind="erased_leftover", server="catalog", object=r["what"], tenant_id=str(r["tenant_id"]),
                    detail=f"the catalog still holds {r['what']} of an erased tenant")
            for r in await catalog.fetch(_ERASED_LEFTOVERS)]


async def reconcile(catalog: asyncpg.Pool | asyncpg.Connection, box: SecretBox, *,
                    open_store: Callable[[], BackupStore] | None = None, redis_url: str | None = None,
                    tenant_kms: TenantKmsKeys | None = None) -> Report:
    """Every server, then the store, Redis and the KMS account when given (opened here, so that a
    store that cannot even be opened is reported unreachable like one that does not answer)."""
    started = dt.datetime.now(dt.timezone.utc)
    servers = [ServerInfo(**dict(r)) for r in await catalog.fetch(
        f"SELECT {SERVER_COLUMNS} FROM database_servers ORDER BY name")]
    placements = [dict(r) for r in await catalog.fetch(
        "SELECT p.tenant_id, p.server_id, p.database_name, p.role_name, p.schema_name, p.tenant_revision, "
        "t.status, t.tier FROM placements p JOIN tenants t ON t.id = p.tenant_id")]
    busy = frozenset(_busy_names([dict(r) for r in await catalog.fetch(
        "SELECT id, tenant_id, kind, params->>'backup_id' AS backup_id FROM operations "
        "WHERE state IN ('queued', 'running') AND kind = ANY($1::text[])", [*_OWNERS, "verify_backup"])]))
    findings: list[Finding] = []
    spares: list[Spare] = []
    unreachable: list[str] = []
    checked: list[str] = []
    for server in servers:
        try:
            server_findings, server_spares = await asyncio.wait_for(_check_server(server, box, placements, busy), 120)
            findings += server_findings
            spares += server_spares
            checked.append(server.name)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError):
            unreachable.append(server.name)
    gone = await leftovers.gone_tenants(catalog)
    findings = leftovers.attribute(findings, gone)
    findings += await _erased_leftovers(catalog)
    elsewhere = await leftovers.find_leftovers(gone, open_store=open_store, redis_url=redis_url)
    findings += elsewhere.findings
    places_checked, places_unreachable = list(elsewhere.places_checked), list(elsewhere.places_unreachable)
    if tenant_kms is not None:
        try:
            async with asyncio.timeout(kms_leftovers.TIMEOUT):
                findings += await kms_leftovers.kms_leftovers(tenant_kms, catalog, gone)
            places_checked.append(kms_leftovers.PLACE)
        except (TenantKmsError, OSError, TimeoutError) as exc:
            # by the error's type only: a message could name an endpoint with credentials
            log.warning("reconciler: the KMS account could not be listed (%s)", type(exc).__name__)
            places_unreachable.append(kms_leftovers.PLACE)
    return Report(started_at=started, finished_at=dt.datetime.now(dt.timezone.utc), servers_checked=checked,
                  unreachable=unreachable, findings=findings, spares=spares,
                  leftovers_checked=elsewhere.checked, places_checked=places_checked,
                  places_unreachable=places_unreachable)


async def reconcile_and_store(catalog: asyncpg.Pool, box: SecretBox, *,
                              open_store: Callable[[], BackupStore] | None = None,
                              redis_url: str | None = None, tenant_kms: TenantKmsKeys | None = None) -> Report:
    report = await reconcile(catalog, box, open_store=open_store, redis_url=redis_url, tenant_kms=tenant_kms)
    await catalog.execute(
        "INSERT INTO reconciliation_reports (started_at, finished_at, report) VALUES ($1, $2, $3::jsonb)",
        report.started_at, report.finished_at, msgspec.json.encode(report).decode())
    return report


async def prune_reports(catalog: asyncpg.Pool | asyncpg.Connection, days: int, batch: int) -> int:
    """Delete one batch of reports older than `days` (never the newest: GET /v1/reconciliation shows it)."""
    status = await catalog.execute(
        "DELETE FROM reconciliation_reports WHERE id IN (SELECT id FROM reconciliation_reports "
        "  WHERE started_at < now() - make_interval(days => $1) "
        "    AND id <> (SELECT id FROM reconciliation_reports ORDER BY started_at DESC LIMIT 1) "
        "  ORDER BY started_at LIMIT $2)", days, batch)
    return int(status.split()[-1])
