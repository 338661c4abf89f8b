"""tenantctl's help against what the issue (#14) and the README promise: every admin command takes
`--json` and names the variables it reads, the direct-access commands name theirs, and every command
and option the README's admin section shows exists in the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
from click.testing import CliRunner

from control_plane.cli import main
from tests.conftest import ROOT

# on direct catalog access (README "The admin CLI"): they read the product's settings, not the API's
DIRECT = {"dev", "api", "worker", "app", "migrate-catalog", "each", "router-key", "catalog-reader", "backup export"}


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def help_of(path: str) -> str:
    done = CliRunner().invoke(main, [*path.split(), "--help"])
    assert done.exit_code == 0, (path, done.output)
    return done.output


def test_every_admin_command_takes_json_and_names_the_apis_variables():
    admin = [path for path, _ in commands() if path not in DIRECT]
    assert {"tenants create", "operations cancel", "migrations list", "servers drain", "plans set", "users create",
            "keys revoke", "backup keys rewrap", "billing sync"} <= set(admin)
    for path in admin:
        out = help_of(path)
        assert "--json" in out and "TENANTPLANE_URL" in out and "TENANTPLANE_TOKEN" in out, path


def test_every_direct_command_names_the_settings_it_reads():
    assert DIRECT <= {path for path, _ in commands()}
    for path in DIRECT:
        out = help_of(path)
        assert "CATALOG_DATABASE_URL" in out or "SECRET_KEY" in out, path


def readme_admin_lines() -> list[str]:
    """The indented command lines of the README's "The admin CLI" section."""
    section = (ROOT / "README.md").read_text().split("### The admin CLI", 1)[1].split("\n#", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    tenantctl ")]


def test_the_readmes_admin_commands_and_options_exist():
    """Each `group a|b ARG --opt` piece of the README's command lines (joined by ` ; ` and ` | `) names
    commands and options `tenantctl --help` has."""
    lines = readme_admin_lines()
    assert len(lines) >= 8
    for line in lines:
        for segment in line.split(" ; "):
            words = segment.removeprefix("tenantctl ").split()
            top = main.commands.get(words[0])
            assert top is not None, (line, words[0])
            group, rest = (top, segment.removeprefix("tenantctl ").split(None, 1)[1]) \
                if isinstance(top, click.Group) else (main, segment.removeprefix("tenantctl "))
            for piece in rest.split(" | "):
                first, *args = piece.split()
                for name in first.split("|"):
                    command = group.commands.get(name)
                    assert command is not None, (line, name)
                    while isinstance(command, click.Group):  # backup keys rewrap
                        command = command.commands[args.pop(0)]
                    options = {opt for param in command.params for opt in param.opts}
                    for flag in (a for a in args if re.fullmatch(r"--[a-z-]+", a)):
                        assert flag in options, (line, name, flag)


def readme_covers(path: str, lines: list[str], section: str) -> bool:
    """`path` (e.g. "operations show") is on one of the command lines or quoted in the prose."""
    *group, name = path.split()
    for line in lines:
        for segment in line.split(" ; "):
            words = segment.removeprefix("tenantctl ").split()
            if words[:len(group)] != group:
                continue
            pieces = " ".join(words[len(group):]).split(" | ")
            if any(name in piece.split()[0].split("|") for piece in pieces if piece):
                return True
    return re.search(rf"`(?:tenantctl )?{re.escape(path)}\b", section) is not None


def test_every_admin_command_is_in_the_readmes_admin_section():
    section = (ROOT / "README.md").read_text().split("### The admin CLI", 1)[1].split("\n#", 1)[0]
    lines = readme_admin_lines()
    missing = [path for path, _ in commands() if path not in DIRECT and not readme_covers(path, lines, section)]
    assert missing == [], missing
