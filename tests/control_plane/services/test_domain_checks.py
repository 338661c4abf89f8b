"""The workers' re-check of pending domains: a claim is looked up at most once per interval, and
once its TXT record exists a round routes it (announced, audited as the worker) with nobody
calling verify; claims another tenant proved are left pending, not an error."""

from __future__ import annotations

import asyncio

from control_plane.services.domain_checks import ACTOR, WorkerDomainChecks
from tests.conftest import Stack, create_active_tenant
from tests.control_plane.services.conftest import dns_settings, fresh_domain, projects_via


async def _status(api, tenant: dict, domain: str) -> str | None:
    items = (await api.get(f"/v1/tenants/{tenant['id']}/domains")).json()["items"]
    return next((d["status"] for d in items if d["domain"] == domain), None)


async def test_a_round_routes_a_pending_domain_once_its_record_exists(dns_api, tenant_app, zone, stack: Stack):
    records, nameservers = zone
    tenant = await create_active_tenant(dns_api)
    domain = fresh_domain("worker")
    token = (await dns_api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})).json()["challenge"]["value"]
    checks = WorkerDomainChecks(dns_settings(stack, nameservers, domain_verification_interval_seconds=0.5))
    try:
        await checks.checks.round()  # no record yet: looked up, still pending
        assert await _status(dns_api, tenant, domain) == "pending"
        records.txt[f"_tenantplane-challenge.{domain}"] = [token]
        await checks.checks.round()  # checked a moment ago: not due before the interval
        assert await _status(dns_api, tenant, domain) == "pending"
        await asyncio.sleep(0.6)
        assert await checks.checks.round() >= 1
    finally:
        await checks.close()
    assert await _status(dns_api, tenant, domain) == "verified"
    routed = await projects_via(tenant_app, domain, 200)
    assert routed.status_code == 200, routed.text
    audit = (await dns_api.get("/v1/audit", params={"tenant": tenant["id"], "action": "tenant.domain.verify"})).json()
    assert [e["actor"] for e in audit["items"]] == [ACTOR]


async def test_a_claim_another_tenant_proved_stays_pending(dns_api, zone, stack: Stack):
    records, nameservers = zone
    first, second = await create_active_tenant(dns_api), await create_active_tenant(dns_api)
    domain = fresh_domain("both")
    tokens = [(await dns_api.post(f"/v1/tenants/{t['id']}/domains", json={"domain": domain})).json()["challenge"]["value"]
              for t in (first, second)]
    records.txt[f"_tenantplane-challenge.{domain}"] = tokens  # both published: the first promoted wins
    checks = WorkerDomainChecks(dns_settings(stack, nameservers, domain_verification_interval_seconds=0.5))
    try:
        await checks.checks.round()
    finally:
        await checks.close()
    assert sorted([await _status(dns_api, first, domain), await _status(dns_api, second, domain)]) == [
        "pending", "verified"]
