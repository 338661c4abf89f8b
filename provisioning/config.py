"""What a provisioning worker is told, with the defaults (the control plane's settings take theirs
from here)."""

from __future__ import annotations

import msgspec

from migrations.tree import DEMO_TREE, TenantTree


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    catalog_dsn: str
    secret_key: str
    # the tenant revisions every template, spare, create, migration, move and restore uses
    # (TENANT_MIGRATIONS, checked by migrations.tree.load_tenant_tree); recorded in the catalog at start
    tenant_tree: TenantTree = DEMO_TREE
    redis_url: str | None = None
    poll_interval: float = 0.5  # seconds between looks at the queue when no NOTIFY wakes the worker
    concurrency: int = 4  # operations run at once
    max_attempts: int = 5  # per step, before the operation fails
    retry_base_seconds: float = 0.5  # the first retry's delay; doubled for each one after it
    reconcile_interval_seconds: float = 600.0  # the scheduled reconciler; 0 turns it off
    login_check_interval_seconds: float = 30.0  # the shared login roles checked and put back (login_drift.py); 0: off
    spare_databases: int = 2  # spare template copies kept per server (spares.py); 0 turns it off
    redis_timeout_seconds: float = 2.0  # one Redis send (connect or reply); a failed announcement is sent again later
    catalog_connect_timeout_seconds: float = 5.0  # opening a catalog connection
    catalog_statement_timeout_seconds: float = 30.0  # one catalog statement's reply
    # backups (provisioning/backups/): where objects go, and what wraps the tenants' data keys
    backup_store_url: str | None = None  # file:///path or s3://bucket/prefix; None: file://<cwd>/.data/backups
    kms_key_id: str | None = None  # AWS KMS wraps data keys when set; else the local master key file
    backup_master_key_file: str = ".data/backup_master.key"  # made on first use when KMS is not set
    # each tenant's data keys under a KMS key of its own (backups/tenant_kms.py), scheduled for
    # deletion with this waiting period (KMS allows 7-30 days) when its keys are destroyed
    backup_kms_key_per_tenant: bool = False
    backup_kms_deletion_window_days: int = 30
    backup_schedule: str | None = "0 3 * * *"  # 5-field cron, UTC (schedules.py); "off" (or None) turns it off
    backup_keep_days: int = 7  # succeeded backups younger than this are kept
    backup_keep_last: int = 3  # and the newest this many, whatever their age
    backup_before_move: bool = False  # a move takes a backup first (trigger pre_move)
    backup_before_delete: bool = False  # a delete takes a backup first (trigger pre_delete)
    backup_drill_interval: float = 86400.0  # seconds between scheduled drills of a tenant's newest backup; 0: off
    backup_drill_sample: int = 10  # tenants drilled per round (drill_schedule.py)
    pause_before_step: str | None = None  # test hook ("<step>", "after:<step>", "finish", "after:finish"); off unless set
    # billing's catalog duties (provisioning/dunning.py, provisioning/outbox.py)
    billing_interval_seconds: float = 30.0  # between rounds; 0 turns them off
    billing_suspend_after_days: int = 14  # still past due this long after the first failure: suspended
    dunning_webhook_url: str | None = None  # where dunning notices are posted; unset: kept in the outbox
    dunning_webhook_secret: str | None = None  # signs them (HMAC-SHA256)
    dunning_retry_base_seconds: float = 5.0  # the first retry's delay; doubled each time, at most 1 h
    # the worker's HTTP endpoint (provisioning/health.py): None: none; 0: a free port, logged at start
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # retention (provisioning/retention.py): days kept, 0 = forever; audit rows are kept longest
    operation_retention_days: int = 30  # finished operations and their steps
    report_retention_days: int = 30  # reconciliation reports (the newest is always kept)
    audit_retention_days: int = 365  # audit rows
    retention_interval_seconds: float = 3600.0  # between pruning rounds (one worker per round); 0: off
    retention_batch_size: int = 1000  # rows per DELETE statement
    # lifecycle events (provisioning/events.py), posted by provisioning/outbox.py
    events_webhook_url: str | None = None  # where events are posted; unset: only kept and listed (GET /v1/events)
    events_webhook_secret: str | None = None  # signs them (HMAC-SHA256, as dunning notices)
    events_retry_base_seconds: float = 5.0  # the first retry's delay; doubled each time, at most 1 h
    events_interval_seconds: float = 1.0  # between delivery rounds
    events_webhook_types: tuple[str, ...] | None = None  # the types posted (events.EVENT_TYPES); None: every type
    events_give_up_after_hours: float = 72.0  # undelivered this long after becoming pending: abandoned
    events_keep_days: int = 90  # events older than this are deleted (never one still pending); 0 keeps them
