"""EVENTS_* settings: a webhook URL needs a strong secret and must be http(s); the types, give-up window
and retention are checked by name; all reach the workers."""

from __future__ import annotations

import re
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.settings import Settings, SettingsError
from provisioning import events
from provisioning.events import EVENT_TYPES
from tests.control_plane.cli_api import operator_env, tenantctl

BASE = {"CATALOG_DATABASE_URL": "postgresql://u:p@localhost/db", "SECRET_KEY": secrets.token_urlsafe(48)}
GOOD_SECRET = secrets.token_urlsafe(48)


def test_the_events_settings_reach_the_workers():
    settings = Settings.from_env({**BASE, "EVENTS_WEBHOOK_URL": "https://hooks.example.com/tp?token=x",
                                  "EVENTS_WEBHOOK_SECRET": GOOD_SECRET, "EVENTS_RETRY_BASE_SECONDS": "2",
                                  "EVENTS_INTERVAL_SECONDS": "0.5"})
    config = settings.worker_config()
    assert (config.events_webhook_url, config.events_webhook_secret) == ("https://hooks.example.com/tp?token=x",
                                                                         GOOD_SECRET)
    assert (config.events_retry_base_seconds, config.events_interval_seconds) == (2.0, 0.5)
    assert Settings.from_env(BASE).worker_config().events_webhook_url is None  # unset: events only kept


@pytest.mark.parametrize(("env", "message"), [
    ({"EVENTS_WEBHOOK_URL": "https://hooks.example.com/"}, "EVENTS_WEBHOOK_URL needs EVENTS_WEBHOOK_SECRET"),
    ({"EVENTS_WEBHOOK_URL": "file:///etc/passwd", "EVENTS_WEBHOOK_SECRET": GOOD_SECRET}, "http(s) URL"),
    ({"EVENTS_WEBHOOK_URL": "https://a/\r\nX: y", "EVENTS_WEBHOOK_SECRET": GOOD_SECRET}, "http(s) URL"),
    ({"EVENTS_WEBHOOK_URL": "https://a/", "EVENTS_WEBHOOK_SECRET": "short"}, "EVENTS_WEBHOOK_SECRET"),
    ({"EVENTS_INTERVAL_SECONDS": "0"}, "EVENTS_INTERVAL_SECONDS"),
])
def test_bad_events_settings_are_refused_by_name(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({**BASE, **env})


def test_types_give_up_and_retention_reach_the_workers():
    config = Settings.from_env({**BASE, "EVENTS_WEBHOOK_TYPES": " tenant.created,tenant.deleted ,tenant.created",
                                "EVENTS_GIVE_UP_AFTER_HOURS": "1.5", "EVENTS_KEEP_DAYS": "7"}).worker_config()
    assert config.events_webhook_types == ("tenant.created", "tenant.deleted")
    assert (config.events_give_up_after_hours, config.events_keep_days) == (1.5, 7)
    default = Settings.from_env(BASE).worker_config()
    assert default.events_webhook_types is None  # every type
    assert (default.events_give_up_after_hours, default.events_keep_days) == (72.0, 90)
    assert Settings.from_env({**BASE, "EVENTS_KEEP_DAYS": "0"}).worker_config().events_keep_days == 0  # forever


@pytest.mark.parametrize(("env", "message"), [
    ({"EVENTS_WEBHOOK_TYPES": "tenant.created,tenant.exploded"},
     "EVENTS_WEBHOOK_TYPES: unknown event type 'tenant.exploded' (known: tenant.created, "),
    ({"EVENTS_WEBHOOK_TYPES": "tenant.created;tenant.deleted"}, "unknown event type 'tenant.created;tenant.deleted'"),
    ({"EVENTS_WEBHOOK_TYPES": "TENANT.CREATED"}, "EVENTS_WEBHOOK_TYPES"),
    ({"EVENTS_WEBHOOK_TYPES": " , ,"}, "EVENTS_WEBHOOK_TYPES: names no event type"),
    ({"EVENTS_GIVE_UP_AFTER_HOURS": "0"}, "EVENTS_GIVE_UP_AFTER_HOURS must be more than 0"),
    ({"EVENTS_GIVE_UP_AFTER_HOURS": "-3"}, "EVENTS_GIVE_UP_AFTER_HOURS"),
    ({"EVENTS_GIVE_UP_AFTER_HOURS": "nan"}, "EVENTS_GIVE_UP_AFTER_HOURS"),
    ({"EVENTS_KEEP_DAYS": "-1"}, "EVENTS_KEEP_DAYS"),
    ({"EVENTS_KEEP_DAYS": "a week"}, "events_keep_days"),
])
def test_bad_lifetime_settings_are_refused_by_name(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({**BASE, **env})


@pytest.mark.parametrize("process", ["worker", "api"])
def test_a_process_with_an_unknown_type_refuses_to_start_and_names_it(tmp_path, process):
    env = operator_env(None, None, CATALOG_DATABASE_URL="postgresql://u:p@127.0.0.1:9/db",
                       SECRET_KEY=BASE["SECRET_KEY"], EVENTS_WEBHOOK_TYPES="tenant.created,tenant.renamed")
    done = tenantctl(process, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "EVENTS_WEBHOOK_TYPES: unknown event type 'tenant.renamed'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and BASE["SECRET_KEY"] not in done.stderr


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.sampled_from(EVENT_TYPES), min_size=1), st.lists(st.sampled_from(["", " ", "\t"]), min_size=2),
       st.text(max_size=20))
def test_the_types_are_parsed_in_order_once_each_and_anything_else_is_refused(types, pads, junk):
    value = ",".join(pads[i % len(pads)] + t + pads[(i + 1) % len(pads)] for i, t in enumerate(types))
    assert events.parse_types(value) == tuple(dict.fromkeys(types))
    if junk.strip() and junk.strip() not in EVENT_TYPES and "," not in junk:
        with pytest.raises(ValueError, match="unknown event type"):
            events.parse_types(f"{value},{junk}")
