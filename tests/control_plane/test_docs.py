"""The docs (issue #14): /schema renders from assets the API serves itself (no CDN), the document
has a bearer scheme and our problem responses, and for every admin route the statuses it really
answers are the documented ones."""

from __future__ import annotations

import json
import re

from control_plane.api.app import admin_guard, create_app
from tests.conftest import Stack, unique_slug


async def test_the_docs_page_loads_only_assets_served_here(api):
    page = await api.get("/schema")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(urls) >= 4 and not [u for u in urls if "://" in u or u.startswith("//")], urls
    for url in urls:
        r = await api.get(url)
        assert r.status_code == 200 and len(r.content) > 200, url
    assert "SwaggerUIBundle" in (await api.get("/schema/assets/swagger-ui-bundle.js")).text
    assert (await api.get("/schema/swagger")).status_code == 200


async def test_the_document_has_a_bearer_scheme_and_problem_bodies(api):
    doc = (await api.get("/schema/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    admin = {p: item for p, item in doc["paths"].items() if p.startswith("/v1/") and "stripe" not in p}
    assert "status_code" not in json.dumps(admin)  # Litestar's default error body is gone
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail", "code"}
    for path, item in admin.items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                for status in ("401", "403"):
                    assert "application/problem+json" in op["responses"][status]["content"], (method, path)


def _operations(stack: Stack):
    app = create_app(stack.settings)
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if admin_guard in handler.resolve_guards():
                for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                    doc_path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
                    url = re.sub(r"\{[^}]+\}", "no-such-thing", route.path)
                    yield doc_path, url, method, "data" in handler.parsed_fn_signature.parameters


async def test_each_route_answers_only_documented_statuses(api, stack: Stack):
    doc = (await api.get("/schema/openapi.json")).json()
    r = await api.post("/v1/admin-keys", json={"name": unique_slug("docs"), "scopes": ["billing"]})
    billing_only = r.json()["token"]
    r = await api.post("/v1/admin-keys", json={"name": unique_slug("docs"), "scopes": ["tenants:read"]})
    read_only = r.json()["token"]
    checked, skipped, wrong = 0, [], []
    for doc_path, url, method, has_body in _operations(stack):
        documented = {int(s) for s in doc["paths"][doc_path][method.lower()]["responses"]}
        json_headers = {"Content-Type": "application/json"}
        actual = set()
        r = await api.request(method, url, headers={"Authorization": "Bearer not-a-key", **json_headers}, content=b"{}")
        actual.add(r.status_code)
        other = read_only if doc_path.startswith("/v1/billing") else billing_only
        r = await api.request(method, url, headers={"Authorization": f"Bearer {other}", **json_headers}, content=b"{}")
        actual.add(r.status_code)
        if has_body:
            for body in (b"[]", b"{", b'{"unknown-field": 1}'):
                actual.add((await api.request(method, url, headers=json_headers, content=body)).status_code)
            actual.add((await api.request(method, url, headers={"Content-Type": "text/plain"}, content=b"x")).status_code)
        elif method == "GET" or "no-such-thing" in url:
            # nothing named: a read, or a write to something that does not exist (no side effect)
            actual.add((await api.request(method, url)).status_code)
        else:
            skipped.append((method, doc_path))
        if not actual <= documented:
            wrong.append((method, doc_path, sorted(actual - documented)))
        checked += 1
    assert not wrong
    assert checked >= 40
    # those act on the whole fleet without input
    assert {p for _, p in skipped} <= {"/v1/billing/sync", "/v1/reconciliation"}, skipped
