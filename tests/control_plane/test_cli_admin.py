"""tenantctl's admin commands as an operator runs them: a subprocess with TENANTPLANE_URL and an admin
key's token (or the ./.data/cli.json of `make run`), against `tenantctl api` as a process, with none
of the product's settings in its environment."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.embedded import free_port
from tests.conftest import ROOT, Stack, add_unreachable_server, unique_slug
from tests.control_plane.cli_api import api_process, as_json, operator_env, tenantctl


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> Iterator[str]:
    with api_process(stack) as url:
        yield url


async def make_key(api, *scopes: str) -> tuple[str, str]:
    name = unique_slug("cli")
    r = await api.post("/v1/admin-keys", json={"name": name, "scopes": list(scopes)})
    assert r.status_code == 201, r.text
    return name, r.json()["token"]


async def run(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 120):
    return await asyncio.to_thread(tenantctl, *args, env=env, cwd=cwd, timeout=timeout)


async def test_a_tenants_life_from_the_cli_is_audited_as_the_key(api, api_url):
    name, token = await make_key(api, "tenants:write")
    env = operator_env(api_url, token)
    slug = unique_slug("cli")

    created = as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))
    assert created["state"] == "succeeded" and created["kind"] == "create_tenant"
    shown = as_json(await run("tenants", "show", slug, "--json", env=env))
    assert shown["slug"] == slug and shown["status"] == "active"
    human = await run("tenants", "show", slug, env=env)
    assert human.returncode == 0 and slug in human.stdout and "active" in human.stdout

    assert as_json(await run("tenants", "suspend", slug, "--json", env=env))["status"] == "suspended"
    assert (await api.get(f"/v1/tenants/{slug}")).json()["status"] == "suspended"
    assert as_json(await run("tenants", "resume", slug, "--json", env=env))["status"] == "active"

    listed = as_json(await run("tenants", "list", "--status", "active", "--limit", "500", "--json", env=env))
    assert slug in [t["slug"] for t in listed["items"]]
    table = await run("tenants", "list", env=env)
    assert table.returncode == 0 and table.stdout.startswith("SLUG")

    ops = as_json(await run("operations", "list", "--tenant", slug, "--json", env=env))["items"]
    assert [o["kind"] for o in ops][-1] == "create_tenant" and {o["tenant_id"] for o in ops} == {shown["id"]}
    op = as_json(await run("operations", "show", ops[-1]["id"], "--json", env=env))
    assert op["state"] == "succeeded" and op["steps"]
    shown_op = await run("operations", "show", ops[-1]["id"], env=env)
    assert "STEP" in shown_op.stdout and op["steps"][0]["name"] in shown_op.stdout
    too_late = await run("operations", "cancel", op["id"], env=env)
    assert too_late.returncode == 1 and "operation_finished" in too_late.stderr + too_late.stdout

    moved = as_json(await run("tenants", "move", slug, "--tier", "schema", "--wait", "--json", env=env))
    assert moved["kind"] == "move_tenant" and moved["state"] == "succeeded", moved
    assert (await api.get(f"/v1/tenants/{slug}")).json()["tier"] == "schema"

    deleted = as_json(await run("tenants", "delete", slug, "--yes", "--wait", "--json", env=env))
    assert deleted["state"] == "succeeded"
    assert (await api.get(f"/v1/tenants/{slug}")).status_code == 404

    audit = (await api.get("/v1/audit", params={"tenant": shown["id"]})).json()["items"]
    assert {"tenant.create", "tenant.delete"} <= {e["action"] for e in audit}, audit
    assert {e["actor"] for e in audit} == {f"api-key:{name}"}, audit


async def test_a_command_the_key_lacks_the_scope_for_prints_the_code_and_exits_1(api, api_url):
    _, token = await make_key(api, "tenants:read")
    env = operator_env(api_url, token)
    assert isinstance(as_json(await run("tenants", "list", "--json", env=env))["items"], list)
    for args in (["tenants", "create", unique_slug("ro")], ["keys", "list"], ["servers", "cordon", "local"],
                 ["reconcile"], ["billing", "sync"]):
        refused = await run(*args, env=env)
        assert refused.returncode == 1, (args, refused.stdout, refused.stderr)
        assert "insufficient_scope" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert (await api.get("/v1/database-servers")).json()["items"][0]["status"] == "active"


@pytest.mark.parametrize("args, code", [
    (["tenants", "create", "Bad Slug!"], "validation_failed"),
    (["tenants", "create", "a" * 300], "validation_failed"),
    (["tenants", "show", "../../v1/admin-keys"], "route_not_found"),  # one segment, never another route
    (["tenants", "show", "x" * 500], "validation_failed"),
    (["operations", "show", "not-an-operation"], "operation_not_found"),
    (["operations", "list", "--kind", "DROP TABLE"], "validation_failed"),
    (["servers", "register", "--name", "Bad Name", "--dsn", "postgresql://x@127.0.0.1/db"], "validation_failed"),
    (["keys", "create", "Bad\nName", "--scope", "admin"], "validation_failed"),
    (["migrations", "show", "nope"], "migration_run_not_found"),
    (["plans", "show", "no-such-plan"], "plan_not_found"),
    (["operations", "retry", "00000000-0000-0000-0000-000000000000"], "operation_not_found"),
    (["operations", "cancel", "00000000-0000-0000-0000-000000000000"], "operation_not_found"),
    (["keys", "revoke", "no-such-key"], "admin_key_not_found"),
    (["servers", "drain", "no-such-server"], "server_not_found"),
    (["migrations", "start", "--to", "t9999"], "unknown_revision"),
    (["backup", "list", "nobody-here"], "tenant_not_found"),
    (["backup", "keys", "rewrap", "nobody-here"], "tenant_not_found"),
])
async def test_hostile_input_shows_the_apis_problem_and_exits_1(api_url, stack: Stack, args, code):
    done = await run(*args, env=operator_env(api_url, stack.settings.admin_token))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{code}:" in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("args,flag", [
    (["migrations", "start", "--wave-size", "0"], "wave_size (--wave-size):"),
    (["migrations", "start", "--canary", "-1"], "canary (--canary):"),
    (["servers", "register", "--name", "cap-zero", "--dsn", "postgresql://u:p@127.0.0.1:1/postgres",
      "--capacity-databases", "0"], "capacity_databases (--capacity-databases):"),
    (["operations", "list", "--limit", "0"], "limit (--limit):"),
])
async def test_a_refused_value_names_the_flag_it_came_from(api_url, stack: Stack, args, flag):
    done = await run(*args, env=operator_env(api_url, stack.settings.admin_token))
    assert done.returncode == 1 and "validation_failed:" in done.stderr and flag in done.stderr, done.stderr


async def test_json_output_parses_for_the_fleet_commands(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    for args, key in ((["servers", "list"], "items"), (["plans", "list"], "items"), (["users", "list"], "items"),
                      (["keys", "list"], "items"), (["migrations", "list"], "items"),
                      (["operations", "list", "--limit", "5"], "items"), (["overview"], "tenants_by_status"),
                      (["audit", "--limit", "5"], "items"), (["reconcile"], "servers_checked")):
        body = as_json(await run(*args, "--json", env=env))
        assert key in body, (args, body)
        human = await run(*args, env=env)
        assert human.returncode == 0 and "{" not in human.stdout.splitlines()[0], (args, human.stdout)
    assert "local" in [s["name"] for s in as_json(await run("servers", "list", "--json", env=env))["items"]]


async def test_keys_made_and_revoked_from_the_cli(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    name = unique_slug("k")
    made = as_json(await run("keys", "create", name, "--scope", "tenants:read", "--scope", "servers", "--json", env=env))
    assert made["key"]["scopes"] == ["servers", "tenants:read"] and made["token"].startswith("tpa_")
    human = await run("keys", "list", env=env)
    assert name in human.stdout and made["token"] not in human.stdout
    reader = operator_env(api_url, made["token"])
    assert as_json(await run("servers", "list", "--json", env=reader))["items"]
    assert as_json(await run("keys", "revoke", name, "--json", env=env))["revoked_at"]
    refused = await run("servers", "list", env=reader)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr


async def test_cordon_and_uncordon_a_server(api, api_url, stack: Stack):
    name = await add_unreachable_server(stack)
    env = operator_env(api_url, stack.settings.admin_token)
    assert as_json(await run("servers", "cordon", name, "--json", env=env))["status"] == "cordoned"
    uncordoned = await run("servers", "uncordon", name, env=env)
    assert uncordoned.returncode == 0 and f"{name}: active" in uncordoned.stdout


async def test_a_missing_url_names_the_variable_to_set(tmp_path: Path):
    done = await run("tenants", "list", env=operator_env(None, None), cwd=tmp_path)
    assert done.returncode == 1 and "TENANTPLANE_URL" in done.stderr, done.stderr
    assert "catalog_database_url" not in done.stderr.lower() and "Traceback" not in done.stderr
    no_token = await run("tenants", "list", env=operator_env("http://127.0.0.1:1", None), cwd=tmp_path)
    assert no_token.returncode == 1 and "TENANTPLANE_TOKEN" in no_token.stderr, no_token.stderr


async def test_an_api_that_does_not_answer_is_named_with_its_variable(tmp_path: Path):
    done = await run("tenants", "list", env=operator_env(f"http://127.0.0.1:{free_port()}", "tpa_x"), cwd=tmp_path)
    assert done.returncode == 1 and "unreachable" in done.stderr and "TENANTPLANE_URL" in done.stderr, done.stderr


async def test_the_url_and_token_are_found_in_the_dev_state_file(api_url, stack: Stack, tmp_path: Path):
    data = tmp_path / ".data"
    data.mkdir()
    (data / "cli.json").write_text(json.dumps({"url": api_url, "token": stack.settings.admin_token}))
    beside = await run("servers", "list", "--json", env=operator_env(None, None), cwd=tmp_path)
    assert "local" in [s["name"] for s in as_json(beside)["items"]]
    elsewhere = await run("servers", "list", "--json", env=operator_env(None, None, TENANTPLANE_DATA_DIR=str(data)))
    assert as_json(elsewhere)["items"]
    (data / "cli.json").write_text("{not json")
    broken = await run("servers", "list", env=operator_env(None, None), cwd=tmp_path)
    assert broken.returncode == 1 and "TENANTPLANE_URL" in broken.stderr and "Traceback" not in broken.stderr


async def test_every_admin_command_names_its_variables_in_its_help():
    from click.testing import CliRunner

    from control_plane.cli import main

    runner = CliRunner()
    for group in ("tenants", "operations", "events", "migrations", "servers", "plans", "users", "keys"):
        for command in main.commands[group].commands:
            out = runner.invoke(main, [group, command, "--help"]).output
            assert "TENANTPLANE_URL" in out and "TENANTPLANE_TOKEN" in out and "--json" in out, (group, command)
    for command in ("migrate", "reconcile", "overview", "audit", "register-server"):
        out = runner.invoke(main, [command, "--help"]).output
        assert "TENANTPLANE_URL" in out and "--json" in out, command
    assert "_TENANTCTL_COMPLETE=bash_source" in runner.invoke(main, ["--help"]).output


def test_a_direct_command_names_the_environment_variable_not_the_field(tmp_path: Path):
    done = tenantctl("migrate-catalog", env=operator_env(None, None), cwd=tmp_path)
    assert done.returncode == 1 and "CATALOG_DATABASE_URL" in done.stderr, done.stderr
    assert "catalog_database_url" not in done.stderr


def test_a_bad_or_unreachable_catalog_url_is_named_without_a_traceback(tmp_path: Path):
    key = "k3y-" + os.urandom(24).hex()
    for url, said in (("mysql://u:hunter2@127.0.0.1/c", "must be a postgresql:// URL"),
                      (f"postgresql://u:hunter2@127.0.0.1:{free_port()}/c", "cannot reach the catalog database")):
        done = tenantctl("migrate-catalog", env=operator_env(None, None, CATALOG_DATABASE_URL=url, SECRET_KEY=key),
                         cwd=tmp_path)
        assert done.returncode == 1 and said in done.stderr and "CATALOG_DATABASE_URL" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr, done.stderr


async def test_wait_draws_a_progress_bar_on_a_terminal(api_url, stack: Stack):
    """On a TTY `--wait` shows the operation's steps as they pass (on stderr: stdout stays the answer)."""
    leader, follower = pty.openpty()
    slug = unique_slug("tty")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "tenants", "create", slug, "--wait"],
                                env=operator_env(api_url, stack.settings.admin_token), cwd=ROOT,
                                stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = await asyncio.to_thread(os.read, leader, 4096)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            seen += chunk
        assert await asyncio.to_thread(proc.wait, 120) == 0, seen.decode(errors="replace")
    finally:
        os.close(leader)
    text = seen.decode(errors="replace")
    assert re.search(r"create_tenant\s+\[[#-]+\]\s+\d+/\d+", text), text  # click's bar: label [###---] done/steps
    assert re.search(r"operation \S+ \(create_tenant\) succeeded", text), text


async def test_backups_from_the_cli(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    slug = unique_slug("bk")
    as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))
    taken = as_json(await run("backup", "create", slug, "--label", "from-cli", "--wait", "--json", env=env))
    assert taken["kind"] == "backup_tenant" and taken["state"] == "succeeded", taken
    backups = as_json(await run("backup", "list", slug, "--json", env=env))["items"]
    assert [b["label"] for b in backups] == ["from-cli"] and backups[0]["state"] == "succeeded"
    human = await run("backup", "list", slug, env=env)
    assert backups[0]["id"] in human.stdout and "ID" in human.stdout.splitlines()[0]
    verified = as_json(await run("backup", "verify", backups[0]["id"], "--wait", "--json", env=env))
    assert verified["state"] == "succeeded", verified


async def test_backup_keys_rewrap_from_the_cli_one_tenant_or_all(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    slug, gone = unique_slug("rw"), unique_slug("rw")
    tenant = as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))["tenant_id"]
    shredded = as_json(await run("tenants", "create", gone, "--wait", "--json", env=env))["tenant_id"]
    for tid in (tenant, shredded):
        assert (await api.post(f"/v1/tenants/{tid}/keys/rotate")).status_code == 200
    assert (await api.post(f"/v1/tenants/{shredded}/keys/destroy", json={"confirm": True})).status_code == 200

    one = as_json(await run("backup", "keys", "rewrap", slug, "--json", env=env))
    # this stack wraps with its local master key, as the key was made: nothing to move, and said so
    assert (one["tenant_id"], one["rewrapped_versions"], one["wrapper_kind"]) == (tenant, 0, "local"), one
    human = await run("backup", "keys", "rewrap", slug, env=env)
    assert human.returncode == 0 and "0 version(s) rewrapped, now under local" in human.stdout, human.stdout

    every = await run("backup", "keys", "rewrap", "--all", "--json", env=env)
    assert every.returncode in (0, 1), every.stderr  # 1: another test's tenant failed; listed, not ours
    summary = json.loads(every.stdout)
    assert {"tenant_id": shredded, "code": "backup_keys_destroyed"}.items() <= \
        next(s for s in summary["skipped"] if s["tenant_id"] == shredded).items()
    assert tenant not in {f["tenant_id"] for f in summary["failed"]} and summary["tenants"] >= 1, summary
    assert (await run("backup", "keys", "rewrap", env=env)).returncode == 2  # neither a tenant nor --all


async def test_a_deleted_tenant_restored_from_the_cli(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    slug = unique_slug("rv")
    tenant = as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))["tenant_id"]
    taken = as_json(await run("backup", "create", slug, "--wait", "--json", env=env))
    backup_id = as_json(await run("backup", "list", slug, "--json", env=env))["items"][0]["id"]
    assert taken["state"] == "succeeded", taken
    assert (await run("tenants", "delete", slug, "--yes", env=env)).returncode == 0
    for _ in range(60):
        if (await api.get(f"/v1/tenants/{tenant}")).json()["status"] == "deleted":
            break
        await asyncio.sleep(0.5)
    revived = as_json(await run("backup", "restore", tenant, backup_id, "--tier", "shared", "--wait", "--json",
                                env=env))
    assert revived["kind"] == "revive_tenant" and revived["state"] == "succeeded", revived
    back = (await api.get(f"/v1/tenants/{tenant}")).json()
    assert (back["slug"], back["status"], back["tier"]) == (slug, "active", "shared")


async def test_servers_register_over_the_api_and_replace_names_its_variables(api_url, stack: Stack, tmp_path: Path):
    env = operator_env(api_url, stack.settings.admin_token)
    taken = await run("register-server", "--name", "local", "--dsn", stack.pg.dsn(), env=env)
    assert taken.returncode == 1 and "server_name_taken" in taken.stderr, taken.stderr
    direct = await run("register-server", "--name", "local", "--dsn", stack.pg.dsn(), "--replace",
                       env=operator_env(None, None), cwd=tmp_path)
    assert direct.returncode == 1 and "CATALOG_DATABASE_URL" in direct.stderr, direct.stderr


async def test_drain_moves_nothing_off_an_empty_server(api_url, stack: Stack):
    name = await add_unreachable_server(stack)
    drained = as_json(await run("servers", "drain", name, "--json", env=operator_env(api_url, stack.settings.admin_token)))
    assert drained["server"] == name and drained["operation_ids"] == [] and drained["status"] == "cordoned", drained


async def test_migrations_start_then_show_and_list(api, api_url, stack: Stack):
    env = operator_env(api_url, stack.settings.admin_token)
    slug = unique_slug("mg")
    as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))
    started = as_json(await run("migrations", "start", "--tenant", slug, "--canary", "0", "--json", env=env))
    assert [t["slug"] for t in started["tenants"]] == [slug]
    shown = as_json(await run("migrations", "show", started["id"], "--json", env=env))
    assert shown["id"] == started["id"]
    assert started["id"] in [r["id"] for r in as_json(await run("migrations", "list", "--json", env=env))["items"]]


async def test_a_tenants_plan_members_domains_features_and_erasure_from_the_cli(api, api_url):
    _, token = await make_key(api, "admin")
    env = operator_env(api_url, token)
    slug, plan = unique_slug("cls"), f"p_{unique_slug('x').replace('-', '_')}"
    assert as_json(await run("tenants", "create", slug, "--wait", "--json", env=env))["state"] == "succeeded"

    defined = as_json(await run("plans", "set", plan, "--feature", "analytics_export", "--rate-limit", "600",
                                "--json", env=env))
    assert defined["features"] == ["analytics_export"] and defined["rate_limit_per_minute"] == 600
    assert as_json(await run("tenants", "plan", slug, plan, "--json", env=env))["plan"] == plan
    assert "analytics_export" in as_json(await run("tenants", "features", slug, "--json", env=env))["features"]
    as_json(await run("tenants", "feature-set", slug, "analytics_export", "--off", "--json", env=env))
    assert "analytics_export" not in as_json(await run("tenants", "features", slug, "--json", env=env))["features"]
    assert (await run("tenants", "feature-clear", slug, "analytics_export", env=env)).returncode == 0

    user = as_json(await run("users", "create", f"{slug}@example.com", "--json", env=env))
    assert as_json(await run("tenants", "member-set", slug, user["id"], "admin", "--json", env=env))["role"] == "admin"
    listed = await run("tenants", "members", slug, env=env)
    assert listed.returncode == 0 and f"{slug}@example.com" in listed.stdout
    assert (await run("tenants", "member-remove", slug, user["id"], env=env)).returncode == 0

    domain = f"{slug}.example.com"
    assert as_json(await run("tenants", "domain-add", slug, domain, "--json", env=env))["domain"] == domain
    assert domain in (await run("tenants", "domains", slug, env=env)).stdout
    verified = as_json(await run("tenants", "domain-verify", slug, domain, "--json", env=env))
    assert verified["status"] == "unverified"  # DOMAIN_VERIFICATION=off: routed on the admin's word
    assert (await run("tenants", "domain-remove", slug, domain, env=env)).returncode == 0

    refused = await run("tenants", "erase", slug, "--yes", env=env)  # a live tenant: delete it first
    assert refused.returncode == 1 and "tenant_not_deleted" in refused.stderr + refused.stdout
    assert as_json(await run("tenants", "plan", slug, "--json", env=env))["plan"] is None
    assert (await run("plans", "delete", plan, env=env)).returncode == 0
    tenant_id = as_json(await run("tenants", "show", slug, "--json", env=env))["id"]
    assert as_json(await run("tenants", "delete", slug, "--yes", "--wait", "--json", env=env))["state"] == "succeeded"
    as_json(await run("tenants", "erase", tenant_id, "--yes", "--json", env=env))
    for _ in range(120):
        report = as_json(await run("tenants", "erasure", tenant_id, "--json", env=env))
        if report["status"] == "completed":
            break
        await asyncio.sleep(0.5)
    assert report["status"] == "completed" and {p["place"] for p in report["places"]} >= {"backups", "catalog"}
