"""The pipelines built from the tiers: the step names each lifecycle records (operation_steps rows,
the API, the crash-test hook rely on them), and what finishes, fails and undoes each."""

from __future__ import annotations

import pytest

from provisioning.pipelines import MOVE, PIPELINES, in_flight_status, pipeline_for

STEPS = {
    ("create_tenant", "dedicated"): ["place_tenant", "ensure_template", "create_role", "create_database",
                                     "migrate_copy", "harden_database"],
    ("delete_tenant", "dedicated"): ["backup_before_delete", "block_connections", "terminate_connections", "drop_database", "drop_role",
                                     "purge_rate_limits"],
    ("migrate_tenant", "dedicated"): ["migrate_schema"],
    ("create_tenant", "schema"): ["place_tenant", "ensure_schemas_database", "create_role", "create_schema",
                                  "migrate_tenant_schema", "grant_schema_privileges"],
    ("delete_tenant", "schema"): ["backup_before_delete", "revoke_gateway", "drop_tenant_schema", "drop_role",
                                  "purge_rate_limits"],
    ("migrate_tenant", "schema"): ["migrate_tenant_schema"],
    ("create_tenant", "shared"): ["place_tenant", "ensure_shared_database", "migrate_shared_database",
                                  "grant_shared_privileges"],
    ("delete_tenant", "shared"): ["backup_before_delete", "delete_tenant_rows", "purge_rate_limits"],
    ("migrate_tenant", "shared"): ["migrate_shared_database"],
}
MOVE_STEPS = ["backup_before_move", "plan_move", "prepare_target", "pause_writes", "copy_data", "verify_copy", "switch_placement",
              "remove_old_copy"]


# backups, restores and drills: the same steps on every tier (the tier's manager dumps and loads)
BACKUP_STEPS = {
    "backup_tenant": ["start_backup", "dump_to_store", "verify_object", "record_backup"],
    "restore_tenant": ["plan_restore", "pause_writes", "fetch_and_load", "harden_restored", "compare_manifest",
                       "switch_placement", "migrate_restored", "remove_old_copy", "resume_writes"],
    "verify_backup": ["drill_restore", "drill_compare", "drop_scratch", "record_drill"],
    "clone_tenant": ["plan_clone", "place_tenant", "prepare_clone", "load_clone_scratch", "copy_clone",
                     "compare_clone", "drop_clone_scratch", "migrate_clone"],
    "revive_tenant": ["plan_revival", "place_tenant", "prepare_clone", "load_clone_scratch", "copy_clone",
                      "compare_clone", "drop_clone_scratch", "migrate_clone"],
    "erase_tenant": ["take_inventory", "delete_backup_objects", "destroy_data_keys", "schedule_kms_key_deletion",
                     "purge_redis_keys", "delete_stripe_customer", "scrub_billing_records", "tombstone_catalog"],
}
TIERS = ("dedicated", "schema", "shared")


def test_every_lifecycle_of_every_tier_records_the_same_step_names():
    assert set(PIPELINES) == (set(STEPS) | {("move_tenant", t) for t in TIERS}
                              | {(kind, t) for kind in BACKUP_STEPS for t in TIERS})
    for kind, names in BACKUP_STEPS.items():
        for tier in TIERS:
            assert pipeline_for(kind, tier).step_names == names, (kind, tier)
    for key, names in STEPS.items():
        assert pipeline_for(*key).step_names == names, key
    assert MOVE.step_names == MOVE_STEPS
    assert all(pipeline_for("move_tenant", t) is MOVE for t in ("dedicated", "schema", "shared"))


@pytest.mark.parametrize("tier", ["dedicated", "schema", "shared"])
def test_what_finishes_fails_and_undoes_each_lifecycle(tier: str):
    create, delete, migrate = (pipeline_for(kind, tier) for kind in ("create_tenant", "delete_tenant",
                                                                      "migrate_tenant"))
    assert (create.finish.name, create.fail.__name__, create.in_flight_status) == (
        "activate_tenant", "mark_tenant_failed", "provisioning")
    assert (delete.finish.name, delete.fail.__name__, delete.in_flight_status) == (
        "mark_tenant_deleted", "mark_tenant_failed", "deleting")
    assert (migrate.finish.name, migrate.fail.__name__, migrate.in_flight_status) == (
        "keep_status", "keep_status", "active")
    assert (MOVE.finish.name, MOVE.fail.__name__, [s.__name__ for s in MOVE.undo]) == (
        "keep_status", "abort_move", ["discard_target"])
    assert not (create.undo or delete.undo or migrate.undo)


def test_a_failed_erasure_leaves_the_tenant_deleted_and_completes_only_in_its_finish():
    erase = pipeline_for("erase_tenant", "dedicated")
    assert (erase.finish.name, erase.fail.__name__, erase.undo) == ("complete_erasure", "erasure_failed", ())
    assert in_flight_status("erase_tenant") is None  # never marks the tenant failed


def test_a_retried_operation_returns_the_tenant_to_its_kinds_in_flight_status():
    assert in_flight_status("create_tenant") == "provisioning"
    assert in_flight_status("delete_tenant") == "deleting"
    assert in_flight_status("migrate_tenant") is None  # a migration never marks the tenant failed
    assert in_flight_status("move_tenant") is None
    assert in_flight_status("clone_tenant") == "provisioning"  # a failed clone is failed like a create
    assert in_flight_status("revive_tenant") == "provisioning"  # so is a deleted tenant's revival


def test_a_clone_finishes_like_a_create_and_drops_its_scratch_when_given_up():
    clone = pipeline_for("clone_tenant", "shared")
    assert (clone.finish.name, clone.fail.__name__, [s.__name__ for s in clone.undo]) == (
        "activate_tenant", "fail_clone", ["drop_clone_scratch"])


def test_a_revival_finishes_like_a_create_and_drops_its_scratch_when_given_up():
    revival = pipeline_for("revive_tenant", "dedicated")
    assert (revival.finish.name, revival.fail.__name__, [s.__name__ for s in revival.undo]) == (
        "activate_tenant", "fail_revival", ["drop_clone_scratch"])
