"""The one problem body (RFC 9457) both planes answer with, from a leaf that imports no web
framework and nothing of ours."""

from __future__ import annotations

import json
import subprocess
import sys

from contracts.problems import ProblemError, error_body, problem_body
from tests.conftest import ROOT


class Busy(ProblemError):
    status, code, title = 409, "busy", "Busy"
    headers = {"Retry-After": "1"}


def test_the_body_names_the_code_twice_and_carries_extra_members():
    body = json.loads(error_body(Busy("try later", operation_id="op-1")))
    assert body == {"type": "urn:tenantplane:problem:busy", "title": "Busy", "status": 409,
                    "detail": "try later", "code": "busy", "operation_id": "op-1"}
    assert list(body)[:5] == ["type", "title", "status", "detail", "code"]
    assert error_body(Busy("x")) == problem_body(409, "busy", "Busy", "x")


def test_an_error_without_extra_members_shares_no_state_with_others():
    assert Busy("a").extra == {} and Busy("b", n=1).extra == {"n": 1} and Busy("c").extra == {}
    assert ProblemError("d").status == 400 and ProblemError("d").code == "bad_request"


# Litestar imports advanced_alchemy (and with it SQLAlchemy) whenever it is installed, as the test
# extra does: refused here, as in a router-only install, so what is checked is what our code imports
_WITHOUT_ADVANCED_ALCHEMY = (
    "import importlib.abc, sys\n"
    "class _Refuse(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'advanced_alchemy':\n"
    "            raise ImportError(name)\n"
    "sys.meta_path.insert(0, _Refuse())\n")


def _modules_after(statement: str) -> set[str]:
    code = f"{_WITHOUT_ADVANCED_ALCHEMY}import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def test_the_leaf_imports_no_framework_and_nothing_of_ours():
    loaded = _modules_after("import contracts.problems")
    assert not loaded & {"litestar", "control_plane", "tenant_router", "provisioning", "sqlalchemy"}


def test_the_demo_app_answers_problems_without_the_control_plane():
    loaded = _modules_after("import demo_app.app")
    assert "tenant_router" in loaded
    assert not loaded & {"control_plane", "provisioning", "sqlalchemy"}
