"""Custom domain ownership with DOMAIN_VERIFICATION=dns, against a real DNS server on a free port:
an added domain is pending and does not route; verifying fails clearly (what the lookup found)
until the TXT record `_tenantplane-challenge.<domain>` holds the token, then the domain routes;
the first tenant to prove a domain gets it; a pending claim is removed without ever routing and
goes with its tenant's delete; hostile input is refused. With `off` (the default) nothing changes:
an added domain routes at once."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import Stack, create_active_tenant, wait_for
from tests.control_plane.services.conftest import fresh_domain, projects_via


@pytest.fixture(scope="module")
async def owner(dns_api) -> dict:
    return await create_active_tenant(dns_api)


_domain = fresh_domain


async def test_a_pending_domain_routes_only_once_its_txt_record_is_found(dns_api, tenant_app, zone, owner):
    records, _ = zone
    domain = _domain()
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": domain.upper() + "."})
    assert r.status_code == 202, r.text
    pending = r.json()
    record = f"_tenantplane-challenge.{domain}"
    assert pending["status"] == "pending" and pending["domain"] == domain
    assert pending["challenge"]["type"] == "TXT" and pending["challenge"]["name"] == record
    token = pending["challenge"]["value"]
    assert len(token) >= 40
    again = await dns_api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": domain})
    assert again.status_code == 202 and again.json()["challenge"]["value"] == token  # the same claim

    # the router does not know the domain (it asks the catalog, which holds no route for it)
    r = await tenant_app.get("/api/projects", headers={"Host": domain})
    assert r.status_code == 404 and r.json()["code"] == "tenant_not_found", r.text

    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["code"] == "domain_not_verified" and problem["record"] == record
    assert problem["expected"] == token and problem["lookup"] == "no_domain" and problem["found"] == []

    records.txt[record] = ["unrelated", "not-the-token"]
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 409 and r.json()["lookup"] == "answer", r.text
    assert sorted(r.json()["found"]) == ["not-the-token", "unrelated"]
    listed = (await dns_api.get(f"/v1/tenants/{owner['id']}/domains")).json()["items"]
    assert [(d["domain"], d["status"]) for d in listed] == [(domain, "pending")]
    assert listed[0]["checked_at"] is not None
    r = await tenant_app.get("/api/projects", headers={"Host": domain})
    assert r.status_code == 404, r.text  # a not-found the router may now have cached

    records.txt[record].append(token)
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verified" and r.json()["verified_at"] and r.json()["challenge"] is None
    routed = await projects_via(tenant_app, domain, 200)  # the announcement dropped the cached not-found
    assert routed.status_code == 200 and routed.json() == [], routed.text

    del records.txt[record]  # verified once is enough: the record may go
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 200 and r.json()["status"] == "verified"
    listed = (await dns_api.get(f"/v1/tenants/{owner['id']}/domains")).json()["items"]
    assert [(d["domain"], d["status"]) for d in listed] == [(domain, "verified")]

    audit = await dns_api.get("/v1/audit", params={"tenant": owner["id"], "limit": 500})
    assert {"tenant.domain.challenge", "tenant.domain.verify"} <= {e["action"] for e in audit.json()["items"]}
    assert token not in audit.text


async def test_the_first_tenant_to_prove_a_domain_gets_it(dns_api, zone, owner):
    records, _ = zone
    other = await create_active_tenant(dns_api)
    domain = _domain("contested")
    tokens = {}
    for tenant in (owner, other):
        r = await dns_api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})
        assert r.status_code == 202, r.text
        tokens[tenant["id"]] = r.json()["challenge"]["value"]
    assert tokens[owner["id"]] != tokens[other["id"]]

    records.txt[f"_tenantplane-challenge.{domain}"] = [tokens[other["id"]]]
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 409 and r.json()["code"] == "domain_not_verified", r.text  # another's token
    r = await dns_api.post(f"/v1/tenants/{other['id']}/domains/{domain}/verify")
    assert r.status_code == 200 and r.json()["tenant_id"] == other["id"], r.text

    records.txt[f"_tenantplane-challenge.{domain}"].append(tokens[owner["id"]])
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 409 and r.json()["code"] == "domain_taken", r.text
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": domain})
    assert r.status_code == 409 and r.json()["code"] == "domain_taken", r.text


async def test_a_pending_claim_is_removed_and_goes_with_its_tenant(dns_api, stack: Stack, owner):
    domain = _domain("gone")
    assert (await dns_api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": domain})).status_code == 202
    assert (await dns_api.delete(f"/v1/tenants/{owner['id']}/domains/{domain}")).status_code == 204
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{domain}/verify")
    assert r.status_code == 404 and r.json()["code"] == "domain_not_found", r.text
    assert domain not in {d["domain"] for d in (await dns_api.get(f"/v1/tenants/{owner['id']}/domains")).json()["items"]}

    doomed = await create_active_tenant(dns_api)
    assert (await dns_api.post(f"/v1/tenants/{doomed['id']}/domains", json={"domain": domain})).status_code == 202
    assert (await dns_api.delete(f"/v1/tenants/{doomed['id']}")).status_code == 202
    await wait_for(dns_api, doomed["id"], "deleted")
    conn = await asyncpg.connect(stack.catalog_dsn)
    try:
        left = await conn.fetchval("SELECT count(*) FROM domain_challenges WHERE tenant_id = $1::uuid", doomed["id"])
    finally:
        await conn.close()
    assert left == 0


LONG = ".".join(["a" * 60] * 4)  # a legal host name whose challenge name would not be


@pytest.mark.parametrize("name", ["10.0.0.10", "[::1]", "0x7f.1", LONG, "bad_label.example.com", "a..b.com",
                                  "été.example.com", "x\u0000.example.com", "x\n.example.com", "-x.example.com",
                                  "acme.localhost", "*.example.com"])
async def test_hostile_domains_are_refused_before_any_claim(dns_api, owner, name):
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": name})
    assert r.status_code == 422 and r.json()["code"] in ("domain_invalid", "validation_failed"), r.text


@pytest.mark.parametrize("path", ["a%00b.example.com", "x%0a.example.com", "%7f.example.com",
                                  "%C3%A9t%C3%A9.example.com", "never-added.example.com"])
async def test_verifying_a_hostile_or_unknown_domain_is_404(dns_api, owner, path):
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{path}/verify")
    assert r.status_code == 404 and r.json()["code"] == "domain_not_found", r.text


async def test_an_overlong_domain_in_the_path_is_refused(dns_api, owner):
    r = await dns_api.post(f"/v1/tenants/{owner['id']}/domains/{'a' * 300}.com/verify")
    assert r.status_code in (404, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_with_verification_off_a_domain_routes_when_added(api, tenant_app):
    tenant = await create_active_tenant(api)
    domain = _domain("off")
    r = await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "unverified" and r.json()["challenge"] is None and r.json()["verified_at"] is None
    routed = await projects_via(tenant_app, domain, 200)
    assert routed.status_code == 200, routed.text
    r = await api.post(f"/v1/tenants/{tenant['id']}/domains/{domain}/verify")
    assert r.status_code == 200 and r.json()["status"] == "unverified", r.text
