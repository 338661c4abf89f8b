"""Custom domains: IP addresses in any spelling are no domain, and a deleted tenant's domains are
released so that another tenant can route them (and the old tenant is never reached through them)."""

from __future__ import annotations

import pytest

from tenant_router.resolution import is_valid_domain
from tests.conftest import create_active_tenant, unique_slug, wait_for
from tests.control_plane.services.conftest import projects_via

IP_LITERALS = [
    "10.0.0.10", "127.0.0.1", "127.0.0.01", "0177.0.0.1", "1.2.3.4.5", "0x7f.1", "0x7f.0x1", "127.0x1",
    "foo.0x1f", "foo.0x", "2130706433", "example.123", "[::1]", "[2001:db8::1]", "::1", "[::ffff:127.0.0.1]",
]


@pytest.mark.parametrize("name", IP_LITERALS)
def test_ip_literals_are_not_domains(name):
    assert not is_valid_domain(name)


@pytest.mark.parametrize("name", ["app.example.com", "123.example.com", "10.0.0.10.example.com", "x.io",
                                  "a-1.b2.co", "0x7f.example.org", "xn--bcher-kva.example"])
def test_host_names_with_numeric_labels_before_the_last_are_domains(name):
    assert is_valid_domain(name)


@pytest.fixture(scope="module")
async def owner(api) -> dict:
    return await create_active_tenant(api)


@pytest.mark.parametrize("name", IP_LITERALS)
async def test_adding_an_ip_literal_is_422(api, owner, name):
    response = await api.post(f"/v1/tenants/{owner['id']}/domains", json={"domain": name})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "domain_invalid"




async def test_a_deleted_tenants_domain_is_released_and_routes_to_its_new_owner(api, tenant_app):
    old = await create_active_tenant(api)
    domain = f"shop.{unique_slug('reuse')}.example.test"
    assert (await api.post(f"/v1/tenants/{old['id']}/domains", json={"domain": domain})).status_code == 201
    r = await tenant_app.post("/api/projects", json={"name": "old-owner"}, headers={"Host": domain})
    assert r.status_code == 201, r.text
    assert [p["name"] for p in (await projects_via(tenant_app, domain, 200)).json()] == ["old-owner"]

    assert (await api.delete(f"/v1/tenants/{old['id']}")).status_code == 202
    await wait_for(api, old["id"], "deleted")
    gone = await projects_via(tenant_app, domain, 404)
    assert gone.status_code == 404 and gone.json()["code"] == "tenant_not_found", gone.text

    new = await create_active_tenant(api)
    r = await api.post(f"/v1/tenants/{new['id']}/domains", json={"domain": domain})
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == new["id"]
    routed = await projects_via(tenant_app, domain, 200)
    assert routed.status_code == 200 and routed.json() == [], routed.text  # the new tenant's (empty) data
    r = await tenant_app.post("/api/projects", json={"name": "new-owner"}, headers={"Host": domain})
    assert r.status_code == 201, r.text
    r = await tenant_app.get("/api/projects", headers={"Host": f"{new['slug']}.localhost"})
    assert [p["name"] for p in r.json()] == ["new-owner"]
