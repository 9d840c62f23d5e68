"""The ``logging`` block: the seed loads as it is, mistakes name the key and the fix."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.audit.settings import DEFAULT_EVENTS
from flask_ccsso.exceptions import ConfigError

#: the seed's block, verbatim (shared/seed-configs/logging.json)
SEED = json.loads("""
{"level": "audit", "destination": "azure-log-analytics",
 "events": ["auth.login", "auth.logout", "skill.invoked", "permission.denied", "token.refreshed"],
 "includeUserClaims": true, "includeGroupMemberships": true}
""")
AZURE = {"endpoint": "https://dce.example.ingest.monitor.azure.com", "dcrImmutableId": "dcr-0123",
         "streamName": "Custom-CCSSOAudit_CL", "tenantId": "tid", "clientId": "cid", "clientSecret": "shh"}


def test_seed_loads_and_falls_back_to_logging_sink_with_a_notice():
    s = parse_logging_block(SEED)
    assert s.level == "audit"
    assert s.events == frozenset(SEED["events"])
    assert s.include_user_claims and s.include_group_memberships
    assert [d.type for d in s.destinations] == ["logging"]
    assert len(s.notices) == 1
    assert "logging.azureMonitor" in s.notices[0] and "Fix:" in s.notices[0]


def test_fallback_notice_logged_once_per_process(tmp_path, caplog):
    s = parse_logging_block(SEED)
    caplog.set_level(logging.WARNING, "flask_ccsso.audit")
    pipelines = []
    for i in range(2):
        app = Flask(f"a{i}", instance_path=str(tmp_path / f"i{i}"))
        pipelines.append(init_audit(app, s))
    try:
        hits = [r for r in caplog.records if "azureMonitor" in r.getMessage()]
        assert len(hits) <= 1  # 0 if an earlier test in this process logged it already
    finally:
        for p in pipelines:
            p.close()


def test_azure_destination_maps_to_logs_ingestion_sink():
    s = parse_logging_block({**SEED, "azureMonitor": AZURE})
    (sink,) = s.destinations
    assert sink.type == "http" and sink.format == "azure-monitor"
    assert sink.url == ("https://dce.example.ingest.monitor.azure.com/dataCollectionRules/dcr-0123"
                        "/streams/Custom-CCSSOAudit_CL?api-version=2023-01-01")
    assert sink.azure.token_url == "https://login.microsoftonline.com/tid/oauth2/v2.0/token"
    assert sink.azure.scope == "https://monitor.azure.com/.default"
    assert "shh" not in repr(s)
    assert s.notices == ()


@pytest.mark.parametrize("missing", ["endpoint", "dcrImmutableId", "streamName", "clientId", "clientSecret"])
def test_incomplete_azure_block_names_the_key(missing):
    block = {k: v for k, v in AZURE.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        parse_logging_block({**SEED, "azureMonitor": block})
    assert info.value.path == f"logging.azureMonitor.{missing}"
    assert missing in info.value.fix and "docs/audit.md" in info.value.fix


def test_azure_needs_tenant_or_token_url():
    block = {k: v for k, v in AZURE.items() if k != "tenantId"}
    with pytest.raises(ConfigError) as info:
        parse_logging_block({**SEED, "azureMonitor": block})
    assert info.value.path == "logging.azureMonitor.tenantId"
    s = parse_logging_block({**SEED, "azureMonitor": {**block, "tokenUrl": "http://127.0.0.1:1/token"}})
    assert s.destinations[0].azure.token_url == "http://127.0.0.1:1/token"


def test_unknown_keys_suggest_the_right_one():
    with pytest.raises(ConfigError) as info:
        parse_logging_block({**SEED, "includeUserClaim": True})
    assert info.value.path == "logging.includeUserClaim"
    assert "includeUserClaims" in info.value.fix
    with pytest.raises(ConfigError) as info:
        parse_logging_block({"destinations": [{"type": "sqlalchemy", "url": "sqlite://", "tabel": "x"}]})
    assert info.value.path == "logging.destinations[0].tabel" and "'table'" in info.value.fix


def test_bad_values_name_the_key():
    cases = [
        ({"level": "verbose"}, "logging.level"),
        ({"level": "debg"}, "logging.level"),
        ({"events": ["auth.loggin"]}, "logging.events[0]"),
        ({"events": "auth.login"}, "logging.events"),
        ({"destination": "splunk"}, "logging.destination"),
        ({"queueSize": 0}, "logging.queueSize"),
        ({"flushInterval": -1}, "logging.flushInterval"),
        ({"failureThreshold": {"count": 5, "windw": 60}}, "logging.failureThreshold.windw"),
        ({"destinations": [{"type": "kafka"}]}, "logging.destinations[0].type"),
        ({"destinations": [{"url": "x"}]}, "logging.destinations[0].type"),
        ({"destinations": [{"type": "sqlalchemy"}]}, "logging.destinations[0].url"),
        ({"destinations": [{"type": "http", "url": "ftp://x"}]}, "logging.destinations[0].url"),
        ({"destinations": [{"type": "http", "url": "https://x", "format": "splunk-hec"}]},
         "logging.destinations[0].token"),
        ({"destinations": [{"type": "http", "url": "https://x", "format": "splunk"}]},
         "logging.destinations[0].format"),
        ({"destinations": [{"type": "sqlalchemy", "url": "sqlite://", "table": "x; drop"}]},
         "logging.destinations[0].table"),
        ({"destinations": [{"type": "logging"}, {"type": "logging", "name": "logging"}]},
         "logging.destinations[1].name"),
        ({"azureMonitor": AZURE}, "logging.azureMonitor"),
    ]
    for raw, path in cases:
        with pytest.raises(ConfigError) as info:
            parse_logging_block(raw)
        assert info.value.path == path, (raw, str(info.value))
        assert info.value.fix


def test_did_you_mean_for_level_and_events():
    with pytest.raises(ConfigError) as info:
        parse_logging_block({"level": "debg"})
    assert "'debug'" in info.value.fix
    with pytest.raises(ConfigError) as info:
        parse_logging_block({"events": ["auth.loggin"]})
    assert "'auth.login'" in info.value.fix


def test_defaults_and_new_keys():
    s = parse_logging_block(None)
    assert s.level == "audit" and s.events == frozenset(DEFAULT_EVENTS)
    assert "skill.invoked" not in s.events
    assert [d.type for d in s.destinations] == ["logging"]
    assert s.failure_threshold.count == 5 and s.failure_threshold.window == 300
    s = parse_logging_block({
        "level": "debug", "spoolDir": "/tmp/x", "queueSize": 50, "batchSize": 7, "flushInterval": 0.5,
        "failureThreshold": False, "retryAttempts": 4, "retryBackoff": 0.1, "maxBackoff": 5, "maxFieldLength": 200,
        "destinations": [
            {"type": "sqlalchemy", "url": "postgresql+psycopg://db/audit", "table": "audit_t"},
            {"type": "http", "url": "https://splunk:8088/services/collector/event", "format": "splunk-hec",
             "token": "T", "index": "sec", "readTimeout": 2},
            {"type": "http", "name": "siem", "url": "https://siem/ingest", "headers": {"X-Key": "k"}},
            {"type": "logging", "logger": "myapp.audit"},
        ],
    })
    assert [d.name for d in s.destinations] == ["sqlalchemy", "http", "siem", "logging"]
    assert s.failure_threshold is None and s.spool_dir == "/tmp/x" and s.queue_size == 50
    assert s.database_url == "postgresql+psycopg://db/audit" and s.database_table == "audit_t"
    assert s.destinations[1].read_timeout == 2 and s.destinations[1].index == "sec"
    assert "token" not in repr(s.destinations[1]) and "X-Key" not in repr(s.destinations[2])


def test_level_semantics():
    audit = parse_logging_block({"events": ["auth.login"]})
    assert audit.records("auth.login") and not audit.records("skill.invoked")
    assert audit.records("auth.failure_threshold")  # the alert is always recorded while enabled
    assert parse_logging_block({"level": "debug", "events": ["auth.login"]}).records("skill.invoked")
    off = parse_logging_block({"level": "off"})
    assert not off.enabled and not off.records("auth.login") and not off.records("auth.failure_threshold")


def test_level_off_starts_nothing(tmp_path):
    from flask_ccsso import signals

    app = Flask("off", instance_path=str(tmp_path / "inst"))
    p = init_audit(app, parse_logging_block({"level": "off"}))
    assert p.sinks == [] and not list(signals.user_logged_in.receivers_for(app))
    with app.test_request_context("/"):
        signals.user_logged_in.send(app, identity=None, provider="okta", method="oidc", step_up=False)
    assert p.emit("auth.login") is None
    assert not (tmp_path / "inst").exists()
    p.close()


def test_init_audit_refuses_a_second_time(tmp_path):
    app = Flask("twice", instance_path=str(tmp_path / "inst"))
    p = init_audit(app, parse_logging_block({"level": "off"}))
    with pytest.raises(RuntimeError, match="once per app"):
        init_audit(app, parse_logging_block({"level": "off"}))
    assert app.extensions["ccsso_audit"] is p
