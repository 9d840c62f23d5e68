"""What ``flask ccsso check-config`` prints (issue #14, items 4 and 14).

* The resolved configuration uses the user's own camelCase keys in every
  block -- the keys the settings structs declare once and the parser reads --
  with defaults filled in and secrets masked.
* The seed's ``destination: "azure-log-analytics"`` without credentials is a
  warning (exit 1), ``--strict`` makes any warning fail the run (exit 2),
  and the report says where audit events go.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from flask_ccsso._validate import config_keys
from flask_ccsso.audit.settings import AuditSettings, SinkSettings
from flask_ccsso.config import (
    BUILTIN_SETTINGS,
    SessionSettings,
    SkillSettings,
    StoreSettings,
    parse_config,
)
from tests.support.cli import make, oidc, run
from tests.support.local_op import CLIENT_SECRET

AZURE = {"endpoint": "https://dce.example.ingest.monitor.azure.com", "dcrImmutableId": "dcr-1",
         "streamName": "Custom-A_CL", "tenantId": "tid", "clientId": "cid", "clientSecret": "az-SECRET-1"}


def _resolved(tmp_path: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    result = run(make(tmp_path, cfg), "check-config", "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


# --------------------------------------------------------------------------- item 14: the user's keys

def test_every_printed_key_is_a_key_the_config_file_takes(tmp_path: Any, op: Any) -> None:
    cfg = copy.deepcopy(oidc(op))
    cfg["session"].update(idleTimeout=1800, store={"type": "embedded"})
    cfg["logging"] = {"destinations": [{"type": "sqlalchemy", "url": f"sqlite:///{tmp_path / 'audit.db'}"},
                                       {"type": "http", "url": "https://siem.example.com/in", "token": "t-SECRET"}],
                      "failureThreshold": False}
    data = _resolved(tmp_path, cfg)
    (prov,) = data["auth"]["providers"].values()
    assert set(prov) == {"provider", *BUILTIN_SETTINGS["oidc"].config_keys()[1:]}
    assert prov["provider"] == "oidc" and prov["clientSecret"] == "***" and prov["idpLogout"] is True
    for skill in data["skills"].values():
        assert set(skill) == set(config_keys(SkillSettings))
    assert set(data["session"]) == set(config_keys(SessionSettings))
    assert set(data["session"]["store"]) == set(config_keys(StoreSettings))
    assert data["session"]["idleTimeout"] == 1800 and data["session"]["absoluteTimeout"] == 28800
    logging_block = data["logging"]
    assert set(logging_block) == {*config_keys(AuditSettings), "destinations"}
    assert logging_block["failureThreshold"] is False
    db, http = logging_block["destinations"]
    assert set(db) == {"type", "name", "url", "table", "createTable"}
    assert db["url"] == f"sqlite:///{tmp_path / 'audit.db'}"  # an absolute sqlite path kept whole
    assert set(http) == set(SinkSettings(type="http", name="x").config_keys) and http["token"] == "***"
    text = json.dumps(data)
    assert CLIENT_SECRET not in text and "SECRET" not in text


def test_the_printed_blocks_read_back_as_the_same_config(tmp_path: Any, op: Any) -> None:
    """The printed ``skills`` and ``session`` are a config the parser takes, meaning the same."""
    cfg = copy.deepcopy(oidc(op))  # SKILLS is shared
    cfg["skills"]["deploy"] = {"allowedGroups": ["ops"], "allowedNetworks": ["10.0.0.0/8"], "sensitive": True,
                               "maxAuthAge": 300, "acrValues": ["urn:ccsso:mfa"], "requireMfa": True}
    cfg["session"].update(refreshWindow=0, cookieHostPrefix=False)
    data = _resolved(tmp_path, cfg)
    session = {k: v for k, v in data["session"].items() if v != "***" and not k.startswith("tokenEncryption")}
    again = parse_config({"auth": cfg["auth"], "skills": data["skills"], "session": session})
    first = parse_config(cfg)
    assert again.skills == first.skills and again.session == first.session


def test_the_human_report_prints_the_same_keys(tmp_path: Any, op: Any) -> None:
    result = run(make(tmp_path, oidc(op)), "check-config", "--offline")
    assert '"clientSecret": "***"' in result.output and '"cookieSecure": true' in result.output
    assert '"client_secret"' not in result.output and '"cookie_secure"' not in result.output


# --------------------------------------------------------------------------- item 4: the Azure fallback

def test_azure_destination_without_credentials_is_a_warning(tmp_path: Any, op: Any) -> None:
    cfg = {**oidc(op), "logging": {"level": "audit", "destination": "azure-log-analytics"}}
    app = make(tmp_path, cfg)
    result = run(app, "check-config", "--offline")
    assert result.exit_code == 1, result.output
    assert "[WARN ] logging.destination is 'azure-log-analytics' but logging.azureMonitor is not set" in result.output
    assert "0 error(s), 1 warning(s)." in result.output
    assert "audit: events (level audit) go to the Python logger 'flask_ccsso.audit' at WARNING" in result.output
    strict = run(app, "check-config", "--offline", "--strict")
    assert strict.exit_code == 2, strict.output
    assert "--strict: warnings count as errors." in strict.output
    # the resolved block shows what the seed's destination became
    resolved = json.loads(run(app, "check-config", "--json").output)
    assert resolved["logging"]["destinations"] == [{"type": "logging", "name": "logging",
                                                    "logger": "flask_ccsso.audit"}]


def test_strict_passes_a_clean_config_and_every_destination_is_named(tmp_path: Any, op: Any) -> None:
    cfg = {**oidc(op), "logging": {"destination": "azure-log-analytics", "azureMonitor": AZURE}}
    app = make(tmp_path, cfg)
    result = run(app, "check-config", "--offline", "--strict")
    assert result.exit_code == 0, result.output
    assert ("audit: events (level audit) go to Azure Monitor (Logs Ingestion API) at "
            "https://dce.example.ingest.monitor.azure.com/dataCollectionRules/dcr-1/") in result.output
    resolved = json.loads(run(app, "check-config", "--json").output)
    (sink,) = resolved["logging"]["destinations"]
    assert sink["format"] == "azure-monitor" and sink["azureMonitor"]["clientSecret"] == "***"
    assert sink["azureMonitor"]["dcrImmutableId"] == "dcr-1"
    assert "az-SECRET-1" not in result.output
