"""Erasure of a deleted tenant of each tier: afterwards no PostgreSQL server, store object, Redis key
or catalog row names it (id, slug, name or domain) except the tombstone and the anonymised audit
rows; asked again, the same report; another tenant untouched throughout."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from contracts import identifiers
from contracts.channels import alias_redis_key, placement_redis_key
from provisioning.announcements import redis_client
from provisioning.inventory import PLACE_NAMES
from tenant_router.ratelimit import TenantRateLimiter
from tests.conftest import Stack, unique_slug, wait_for

# catalog tables that may still hold the erased tenant's id (never its slug, name or domain)
TOMBSTONE_TABLES = {"tenants", "tenant_erasures", "tenant_keys", "tenant_kms_keys", "operations", "audit_log",
                    "tenant_events", "billing_events", "announcement_outbox"}


async def _op_done(api: httpx.AsyncClient, op_id: str) -> dict:
    for _ in range(60):
        op = (await api.get(f"/v1/operations/{op_id}", params={"wait": 5})).json()
        if op["state"] in ("succeeded", "failed"):
            return op
    raise AssertionError(f"operation {op_id} did not end")


async def offboarded_tenant(stack: Stack, api: httpx.AsyncClient, tier: str) -> dict:
    """A tenant with a backup, a domain, a member, rate-limit and placement keys in Redis, then deleted."""
    slug = unique_slug("er")
    name = f"Erase Me {uuid.uuid4().hex[:8]}"
    tenant = await active(api, slug, name, tier)
    tid = tenant["id"]
    domain = f"{slug}.example.com"
    assert (await api.post(f"/v1/tenants/{tid}/domains", json={"domain": domain})).status_code == 201
    user = (await api.post("/v1/users", json={"email": f"p{uuid.uuid4().hex[:10]}@example.com", "name": "A Person"})).json()
    assert (await api.put(f"/v1/tenants/{tid}/memberships/{user['id']}", json={"role": "owner"})).status_code == 200
    backup = await api.post(f"/v1/tenants/{tid}/backups")
    assert backup.status_code == 202, backup.text
    assert (await _op_done(api, backup.json()["operation_id"]))["state"] == "succeeded"
    deleted = await api.delete(f"/v1/tenants/{tid}")
    assert deleted.status_code == 202, deleted.text
    await wait_for(api, tid, "deleted")
    # what routers can leave in Redis (after the delete's announcement dropped the placement copy): the
    # rate limiter's window (the real limiter's), a stale placement copy and the aliases
    limiter = TenantRateLimiter(stack.settings.redis_url)
    assert (await limiter.hit(uuid.UUID(tid), 60)) is not None
    redis = redis_client(stack.settings.redis_url)
    try:
        await redis.set(placement_redis_key(tid), b'{"tenant_id": "%s"}' % tid.encode(), ex=600)
        await redis.set(alias_redis_key("slug", slug), tid, ex=600)
        await redis.set(alias_redis_key("domain", domain), tid, ex=600)
    finally:
        await redis.aclose()
    return {"id": tid, "slug": slug, "name": name, "domain": domain, "user": user, "tier": tier}


async def active(api: httpx.AsyncClient, slug: str, name: str, tier: str) -> dict:
    r = await api.post("/v1/tenants", json={"slug": slug, "name": name, "tier": tier})
    assert r.status_code == 202, r.text
    try:
        return await wait_for(api, r.json()["tenant"]["id"], "active")
    except AssertionError:
        raise AssertionError((await api.get(f"/v1/operations/{r.json()['operation_id']}")).text) from None


async def erased(api: httpx.AsyncClient, tid: str) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        report = (await api.get(f"/v1/tenants/{tid}/erasure")).json()
        if report["status"] == "completed":
            return report
        await asyncio.sleep(0.2)
    raise AssertionError(f"erasure of {tid} did not complete: {report}")


def store_names(stack: Stack) -> list[str]:
    root = Path(urlsplit(stack.settings.backup_store_url).path)
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def scan_postgres(stack: Stack, needles: list[str]) -> list[str]:
    """Databases, roles, schemas and (in the shared database) tenant_id rows that name the tenant."""
    found: list[str] = []
    admin = await asyncpg.connect(stack.pg.dsn())
    try:
        compact = [n.replace("-", "") for n in needles]
        for row in await admin.fetch("SELECT datname AS n FROM pg_database UNION ALL SELECT rolname FROM pg_roles"):
            found += [row["n"] for n in needles + compact if n in row["n"]]
        dbs = [r["datname"] for r in await admin.fetch("SELECT datname FROM pg_database WHERE NOT datistemplate")]
    finally:
        await admin.close()
    for db in dbs:
        conn = await asyncpg.connect(stack.pg.dsn(db))
        try:
            for row in await conn.fetch("SELECT nspname FROM pg_namespace"):
                found += [f"{db}:{row['nspname']}" for n in compact if n in row["nspname"]]
            if db == stack.catalog_dsn.rsplit("/", 1)[-1].split("?")[0]:
                continue  # the catalog is scanned on its own
            tables = await conn.fetch("SELECT table_schema, table_name FROM information_schema.columns "
                                      "WHERE column_name = 'tenant_id' AND table_schema NOT IN "
                                      "('pg_catalog', 'information_schema')")
            for t in tables:
                count = await conn.fetchval(
                    f'SELECT count(*) FROM "{t["table_schema"]}"."{t["table_name"]}" WHERE tenant_id::text = $1',
                    needles[0])
                if count:
                    found.append(f"{db}:{t['table_name']}:{count}")
        finally:
            await conn.close()
    return found


async def scan_catalog(stack: Stack, tenant: dict) -> dict[str, list[str]]:
    """Per catalog table, which of the tenant's names a row's text holds."""
    hits: dict[str, list[str]] = {}
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            for what in ("id", "slug", "name", "domain"):
                if await conn.fetchval(f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, $1) > 0',
                                       tenant[what]):
                    hits.setdefault(table, []).append(what)
        # the user's address and name are the user's (a user can belong to other tenants), not in audit rows
        for what in (tenant["user"]["id"], tenant["user"]["email"]):
            if await conn.fetchval("SELECT count(*) FROM audit_log WHERE target_id = $1 AND strpos(details::text, $2) > 0",
                                   tenant["id"], what):
                hits.setdefault("audit_log", []).append("user")
    finally:
        await conn.close()
    return hits


async def scan_redis(stack: Stack, tenant: dict) -> list[str]:
    redis = redis_client(stack.settings.redis_url)
    found = []
    try:
        async for raw in redis.scan_iter(match="*", count=1000):
            key = raw.decode()
            if any(tenant[w] in key for w in ("id", "slug", "domain")):
                found.append(key)
            elif await redis.type(raw) == b"string" and (await redis.get(raw) or b"").decode(errors="replace") == tenant["id"]:
                found.append(key)
    finally:
        await redis.aclose()
    return found


async def assert_nothing_left(stack: Stack, tenant: dict) -> None:
    assert await scan_postgres(stack, [tenant["id"]]) == []
    assert [n for n in store_names(stack) if tenant["id"] in n] == []
    assert await scan_redis(stack, tenant) == []
    hits = await scan_catalog(stack, tenant)
    assert {t: w for t, w in hits.items() if w != ["id"] or t not in TOMBSTONE_TABLES} == {}, hits


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
async def test_erasure_leaves_nothing_but_the_tombstone(tier: str, stack: Stack, api: httpx.AsyncClient):
    bystander = await active(api, unique_slug("by"), "Bystander", tier)
    b = await api.post(f"/v1/tenants/{bystander['id']}/backups")
    assert (await _op_done(api, b.json()["operation_id"]))["state"] == "succeeded"
    tenant = await offboarded_tenant(stack, api, tier)
    assert [n for n in store_names(stack) if tenant["id"] in n]  # the delete kept the backup

    r = await api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert r.status_code == 202, r.text
    report = await erased(api, tenant["id"])

    places = {p["place"]: p for p in report["places"]}
    assert list(places) == list(PLACE_NAMES)
    assert all(p["done"] for p in places.values()), places
    # the suite's worker has no STRIPE_API_KEY: the step completes and says so (test_erasure_stripe.py: with one)
    assert places["stripe_customer"]["details"]["state"] == "not_configured"
    assert places["backups"]["details"]["removed"] == 1
    assert places["store_objects"]["details"]["removed"] == 1
    assert places["data_key"]["details"]["removed"] == 1
    assert places["redis"]["details"]["removed"] >= 4  # placement, two aliases, the rate-limit window
    assert places["memberships"]["details"]["removed"] == 1
    await assert_nothing_left(stack, tenant)

    again = await api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert again.status_code == 200 and again.json() == report
    # the slug is free again, and a new tenant under it is another tenant
    reused = await api.post("/v1/tenants", json={"slug": tenant["slug"], "name": "New", "tier": tier})
    assert reused.status_code == 202, reused.text
    assert reused.json()["tenant"]["id"] != tenant["id"]
    # the bystander kept its tenant, its backup and its key
    assert (await api.get(f"/v1/tenants/{bystander['id']}")).json()["status"] == "active"
    kept = (await api.get(f"/v1/tenants/{bystander['id']}/backups")).json()
    assert [x["state"] for x in kept["items"]] == ["succeeded"]
    assert [n for n in store_names(stack) if bystander["id"] in n]


async def test_erasure_of_a_live_tenant_is_refused(api: httpx.AsyncClient):
    tenant = await active(api, unique_slug("lv"), "Live", "dedicated")
    r = await api.post(f"/v1/tenants/{tenant['id']}/erasure")
    assert r.status_code == 409 and r.json()["code"] == "tenant_not_deleted", r.text
    missing = await api.get(f"/v1/tenants/{tenant['id']}/erasure")
    assert missing.status_code == 404 and missing.json()["code"] == "erasure_not_found"
    assert (await api.get(f"/v1/tenants/{uuid.uuid4()}/erasure")).status_code == 404


async def test_the_reconciler_reports_what_is_found_of_an_erased_tenant(stack: Stack, api: httpx.AsyncClient):
    tenant = await offboarded_tenant(stack, api, "dedicated")
    assert (await api.post(f"/v1/tenants/{tenant['id']}/erasure")).status_code == 202
    await erased(api, tenant["id"])
    admin = await asyncpg.connect(stack.pg.dsn())
    catalog = await asyncpg.connect(stack.catalog_dsn)
    database = identifiers.tenant_database(tenant["id"])
    try:  # a copy of its database and a backups row come back (say, by hand from an old dump)
        await admin.execute(f'CREATE DATABASE "{database}"')
        await catalog.execute("INSERT INTO backups (id, tenant_id, tier, store) VALUES (gen_random_uuid(), $1::uuid, 'dedicated', 'file')",
                              tenant["id"])
        # and a pending domain claim (domain_challenges: routers never read it, but it names the tenant)
        await catalog.execute("INSERT INTO domain_challenges (domain, tenant_id, token) VALUES ($1, $2::uuid, 't')",
                              f"left.{tenant['slug']}.example.com", tenant["id"])
        report = (await api.post("/v1/reconciliation")).json()
        mine = {(f["kind"], f["object"], f["detail"]) for f in report["findings"] if f["tenant_id"] == tenant["id"]}
        assert ("erased_leftover", "backups", "the catalog still holds backups of an erased tenant") in mine
        assert ("erased_leftover", "domains", "the catalog still holds domains of an erased tenant") in mine
        assert ("erased_leftover", database, "orphan_database of an erased tenant") in mine
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await catalog.execute("DELETE FROM backups WHERE tenant_id = $1::uuid", tenant["id"])
        await catalog.execute("DELETE FROM domain_challenges WHERE tenant_id = $1::uuid", tenant["id"])
        await admin.close()
        await catalog.close()
