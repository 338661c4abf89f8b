"""The `tenantctl` script's entry point: the CLI, or one line naming the missing extra.

`pip install tenantplane[router]` installs this script too (a wheel's scripts cannot depend on an
extra), but the CLI needs the control plane's dependencies (SQLAlchemy, Alembic, ...). Without them
an operator gets the install command and exit status 2 (click's status for a usage error), not an
import traceback. Kept outside control_plane.cli: importing that package is what fails."""

from __future__ import annotations

import sys

# our own top-level packages: one of them missing is a broken install, not a missing extra
OURS = frozenset({"contracts", "control_plane", "tenant_router", "tenant_sqlalchemy", "provisioning", "migrations",
                  "demo_app"})
EXTRA_HINT = "pip install tenantplane[control-plane]"


def main() -> None:
    try:
        from control_plane.cli import main as cli
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] in OURS:
            raise
        print(f"tenantctl needs the control-plane extra ({exc.name} is not installed): {EXTRA_HINT}",
              file=sys.stderr)
        raise SystemExit(2) from None
    cli()
