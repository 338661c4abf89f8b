"""`tenantctl --version` prints the installed version (issue #14)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from tests.conftest import ROOT


def test_tenantctl_prints_its_version():
    r = subprocess.run([sys.executable, "-m", "control_plane.cli", "--version"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"tenantctl, version {importlib.metadata.version('tenantplane')}"
