"""boto3 has one home (provisioning/backups/store.py), and the router never reaches the backups."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_IMPORT = re.compile(r"^\s*(import boto3|from boto3[ .])", re.MULTILINE)


def test_boto3_is_imported_by_the_store_alone() -> None:
    importers = sorted(str(p.relative_to(ROOT)) for folder in ("contracts", "control_plane", "tenant_router",
                                                                "provisioning", "migrations", "demo_app")
                       for p in (ROOT / folder).rglob("*.py") if _IMPORT.search(p.read_text()))
    assert importers == ["provisioning/backups/store.py"]


def test_the_router_does_not_import_backups() -> None:
    for path in (ROOT / "tenant_router").rglob("*.py"):
        assert "provisioning.backups" not in path.read_text(), path
