"""The admin API's composition: every admin route sits behind the admin guard, and only health,
metrics and the schema are public."""

from __future__ import annotations

from control_plane.api.app import admin_guard, create_app
from control_plane.settings import Settings

# the Stripe webhook is guarded by its signature instead of the admin token
PUBLIC_PREFIXES = ("/health/", "/metrics", "/schema", "/v1/billing/stripe/webhook")


def test_admin_routes_are_guarded_and_only_public_ones_are_not():
    settings = Settings.from_env({}, catalog_database_url="postgresql://u:p@127.0.0.1:1/catalog",
                                 secret_key="test-secret-key-" + "0123456789abcdef" * 2)
    app = create_app(settings)
    seen = {"public": 0, "admin": 0}
    for route in app.routes:
        public = route.path.startswith(PUBLIC_PREFIXES)
        for handler in route.route_handlers:  # type: ignore[union-attr]
            assert (admin_guard in handler.resolve_guards()) is not public, route.path
            seen["public" if public else "admin"] += 1
    assert seen["admin"] >= 30 and seen["public"] >= 3
    assert {"/health/live", "/health/ready", "/metrics", "/v1/tenants", "/v1/reconciliation"} <= {
        route.path for route in app.routes}
