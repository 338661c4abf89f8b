"""Which tenant revisions a process runs: the tenant tree, a settings value built once at start
(`TENANT_MIGRATIONS`) and handed to everything that migrates, renders or compares tenant revisions.

The tree is a folder of Alembic revisions; tenantplane's own `migrations/tenant/env.py` runs them
(its locks, per-tier schemas, offline rendering and the shared tier's check). Without a folder the
demo's `projects` revisions serve. `identity()` names the tree's content, so processes can tell that
they were given different trees (`provisioning/tree_check.py`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import msgspec
from alembic.config import Config
from alembic.script import ScriptDirectory

_HERE = Path(__file__).resolve().parent
DEMO_VERSIONS = _HERE / "tenant" / "versions"


class TenantTreeError(ValueError):
    """The folder named by TENANT_MIGRATIONS is not a usable tree of tenant revisions."""


class TenantTree(msgspec.Struct, frozen=True):
    versions: str | None = None  # an absolute folder of revisions; None: the demo's

    @property
    def location(self) -> str:
        return self.versions or str(DEMO_VERSIONS)

    def config(self, dsn_url: str | None = None, **attributes: str | None) -> Config:
        """An Alembic config on our env.py with this tree's revisions (`dsn_url`: SQLAlchemy's)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(_HERE / "tenant"))
        if self.versions is not None:  # None: the env's own versions/
            cfg.set_main_option("path_separator", "os")  # one folder, spaces and commas included
            cfg.set_main_option("version_locations", self.versions)
        if dsn_url is not None:
            # stored as an attribute, not an option: ConfigParser would choke on '%' in passwords
            cfg.attributes["url"] = dsn_url
        cfg.attributes.update({k: v for k, v in attributes.items() if v is not None})
        return cfg

    def head(self) -> str:
        return _described(self)[0][0]

    def revisions(self) -> tuple[str, ...]:
        """Every revision, newest first (the tree is linear)."""
        return _described(self)[0]

    def identity(self) -> str:
        """A digest of every revision's code (not its comments or docstrings, so that a release that
        only rewords them is still the same tree): two processes agree on the tree iff it matches."""
        return _described(self)[1]


# Alembic reads its script folder on each call (~1 ms); a process's tree does not change while it runs
@functools.cache
def _described(tree: TenantTree) -> tuple[tuple[str, ...], str]:
    scripts = ScriptDirectory.from_config(tree.config())
    revisions = tuple(rev.revision for rev in scripts.walk_revisions())
    digest = hashlib.sha256()
    for rev in sorted(scripts.walk_revisions(), key=lambda r: r.revision):
        digest.update(rev.revision.encode() + b"\0" + _code(Path(rev.path)).encode() + b"\0")
    return revisions, digest.hexdigest()[:16]


def _code(path: Path) -> str:
    """The revision's syntax tree without docstrings (comments are not in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


DEMO_TREE = TenantTree()


def load_tenant_tree(value: str | None, variable: str = "TENANT_MIGRATIONS") -> TenantTree:
    """The tree `value` names (unset or empty: the demo's), checked now rather than at the first
    migration: a folder Alembic can read, holding revisions with exactly one head."""
    if not value:
        return DEMO_TREE
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise TenantTreeError(f"{variable}={value!r} is not a folder (it names the folder of the "
                              "application's tenant Alembic revisions)")
    tree = TenantTree(versions=str(folder.resolve()))
    try:
        scripts = ScriptDirectory.from_config(tree.config())
        heads = scripts.get_heads()
    except Exception as exc:  # Alembic's own errors (a revision that fails to import, a broken chain)
        raise TenantTreeError(f"{variable}={value!r}: its revisions cannot be read "
                              f"({type(exc).__name__}: {exc})") from None
    if not heads:
        raise TenantTreeError(f"{variable}={value!r} holds no Alembic revision (files with `revision = ...`)")
    if len(heads) > 1:
        raise TenantTreeError(f"{variable}={value!r} has {len(heads)} heads ({', '.join(sorted(heads))}); "
                              "tenant revisions must form one line")
    return tree
