"""Path parameters that name a server or a custom domain are checked like bodies: a value that no
server or domain can have (a NUL, a control character, non-ASCII) answers 404, never 500."""

from __future__ import annotations

import pytest

from tests.conftest import create_active_tenant

HOSTILE = ["a%00b", "%00", "local%00", "local%0a", "local%0d%0aX-Injected:%201", "%7f", "%C3%A9t%C3%A9",
           "%ED%A0%80", "LOCAL"]


def _assert_not_found(response, code: str) -> None:
    assert response.status_code == 404, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


@pytest.mark.parametrize("action", ["cordon", "uncordon", "drain"])
@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_server_names_are_404(api, action, name):
    _assert_not_found(await api.post(f"/v1/database-servers/{name}/{action}"), "server_not_found")


@pytest.fixture(scope="module")
async def tenant(api) -> dict:
    return await create_active_tenant(api)


@pytest.mark.parametrize("domain", ["a%00b.example.com", "%00", "x%0a.example.com", "%7f.example.com",
                                    "%C3%A9t%C3%A9.example.com", "%ED%A0%80.example.com"])
async def test_hostile_domains_in_the_path_are_404(api, tenant, domain):
    _assert_not_found(await api.delete(f"/v1/tenants/{tenant['id']}/domains/{domain}"), "domain_not_found")


async def test_a_stored_domain_is_still_removed_by_path(api, tenant):
    domain = f"app.{tenant['slug']}.example.test"
    assert (await api.post(f"/v1/tenants/{tenant['id']}/domains", json={"domain": domain})).status_code == 201
    assert (await api.delete(f"/v1/tenants/{tenant['id']}/domains/{domain.upper()}.")).status_code == 204
    assert (await api.post("/v1/database-servers/local/cordon")).status_code == 200
    assert (await api.post("/v1/database-servers/local/uncordon")).status_code == 200
