"""Where audit events go is said at start-up, and the seed's Azure fallback
shows up where a plain Flask app's log is (issue #14, item 4).

A plain Flask app configures no logging: Python's last-resort handler prints
WARNING and up to stderr, nothing below. The fallback used to write the
events at INFO -- so they went nowhere anyone could see.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block

ROOT = Path(__file__).resolve().parents[2]

#: a plain Flask app, no logging set up, the seed's logging block without azureMonitor
PLAIN_APP = textwrap.dedent("""
    from flask import Flask
    from flask_ccsso import CCSSO, requires_skill

    app = Flask("plain", instance_path={instance!r})
    app.config.update(SECRET_KEY="k" * 48, CCSSO={{
        "auth": {{"provider": "oidc", "clientId": "portal", "clientSecret": "s3cret",
                  "issuer": "https://idp.example.com"}},
        "skills": {{"deploy": {{"allowedGroups": ["devops"]}}}},
        "session": {{"cookieSecure": False}},
        "logging": {{"level": "audit", "destination": "azure-log-analytics",
                     "events": ["auth.login", "permission.denied"]}},
    }})
    CCSSO(app)

    @app.get("/deploy")
    @requires_skill("deploy")
    def deploy():
        return "deployed"

    assert app.test_client().get("/deploy", headers={{"Accept": "application/json"}}).status_code == 401
    # interpreter exit closes the pipeline (atexit): the event is written before the process ends
""")


def test_fallback_events_reach_a_plain_flask_apps_log(tmp_path: Path) -> None:
    script = tmp_path / "plain_app.py"
    script.write_text(PLAIN_APP.format(instance=str(tmp_path / "instance")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's flask_ccsso, not another install
    proc = subprocess.run([sys.executable, str(script)], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [e["type"] for e in events] == ["permission.denied"], proc.stderr
    assert "audit events go to the app's log instead" in proc.stderr  # the one start-up warning says where
    assert "s3cret" not in proc.stderr


def _start(tmp_path: Path, block: dict[str, object], caplog: object) -> list[str]:
    caplog.set_level(logging.INFO, "flask_ccsso.audit")  # type: ignore[attr-defined]
    app = Flask("startup_line", instance_path=str(tmp_path / "instance"))
    pipeline = init_audit(app, parse_logging_block(block))
    pipeline.close()
    return [r.getMessage() for r in caplog.records if "go to" in r.getMessage()]  # type: ignore[attr-defined]


def test_startup_line_names_every_destination_credentials_masked(tmp_path: Path, caplog: object) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    lines = _start(tmp_path, {"destinations": [
        {"type": "sqlalchemy", "url": db, "table": "audit_rows"},
        {"type": "http", "name": "siem", "format": "splunk-hec", "url": "https://user:pw-SECRET@siem.example.com/hec",
         "token": "tok-SECRET"},
        {"type": "logging", "logger": "myapp.audit"},
    ]}, caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"the database {db} table audit_rows" in line
    assert "splunk-hec over HTTP at https://user:***@siem.example.com/hec (sink 'siem')" in line
    assert "the Python logger 'myapp.audit' at INFO" in line
    assert "SECRET" not in line


def test_startup_line_for_the_default_and_the_azure_destination(tmp_path: Path, caplog: object) -> None:
    (line,) = _start(tmp_path, {}, caplog)
    assert "the Python logger 'flask_ccsso.audit' at INFO" in line
    caplog.clear()  # type: ignore[attr-defined]
    azure = {"endpoint": "https://dce.example.ingest.monitor.azure.com", "dcrImmutableId": "dcr-1",
             "streamName": "Custom-A_CL", "tenantId": "t", "clientId": "c", "clientSecret": "cs-SECRET"}
    (line,) = _start(tmp_path, {"destination": "azure-log-analytics", "azureMonitor": azure}, caplog)
    assert "Azure Monitor (Logs Ingestion API) at https://dce.example.ingest.monitor.azure.com/" in line
    assert "SECRET" not in line
