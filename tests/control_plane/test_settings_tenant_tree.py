"""TENANT_MIGRATIONS is a settings field: the demo's tree without it, the application's folder with
it (handed on to the workers' config), and a folder that is not a tree is refused at start with an
error that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.settings import Settings, SettingsError
from migrations.tree import DEMO_TREE, TenantTree

ROOT = Path(__file__).resolve().parents[2]
BASE = {"CATALOG_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/catalog", "SECRET_KEY": "s3cr3t-" + "k" * 8 + "abcdefghijklmnopqrstuvwxyz"}


def test_the_default_is_the_demo_tree():
    settings = Settings.from_env(BASE)
    assert settings.tenant_tree is DEMO_TREE and settings.worker_config().tenant_tree is DEMO_TREE
    assert settings.tenant_tree.head() == "t0002"


def test_the_application_folder_is_the_tree_of_every_process(tmp_path):
    example = ROOT / "examples" / "tenant_migrations"
    settings = Settings.from_env({**BASE, "TENANT_MIGRATIONS": str(example)})
    assert settings.tenant_tree == TenantTree(versions=str(example.resolve()))
    assert settings.worker_config().tenant_tree == settings.tenant_tree  # the workers get the same
    assert settings.tenant_tree.head() == "t0001" and settings.tenant_tree.identity() != DEMO_TREE.identity()
    # an override (a composer's) wins over the environment, and is checked the same way
    good = ROOT / "tests" / "migrations" / "app_tree_good"
    assert Settings.from_env({**BASE, "TENANT_MIGRATIONS": str(example)}, tenant_tree=str(good)).tenant_tree.versions == str(good)


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "missing", "is not a folder"),
    (lambda tmp: tmp, "holds no Alembic revision"),
    (lambda tmp: (tmp / "x.txt").write_text("x") and tmp / "x.txt", "is not a folder"),
    (lambda tmp: _broken(tmp), "cannot be read"),
    (lambda tmp: _two_heads(tmp), "2 heads"),
])
def test_a_folder_that_is_not_a_tree_is_refused_naming_the_variable(tmp_path, make, message):
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({**BASE, "TENANT_MIGRATIONS": str(make(tmp_path))})
    assert str(raised.value).startswith("TENANT_MIGRATIONS=")


def _revision(folder: Path, name: str, down: str | None, body: str = "") -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(
        f"revision = {name!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n{body}\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")


def _broken(tmp: Path) -> Path:
    _revision(tmp / "broken", "t0001", None, "import no_such_module_here\n")
    return tmp / "broken"


def _two_heads(tmp: Path) -> Path:
    _revision(tmp / "forked", "t0001", None)
    _revision(tmp / "forked", "t0002", "t0001")
    _revision(tmp / "forked", "t0003", "t0001")
    return tmp / "forked"
