"""The pipeline end to end: real signals in a request, queue-full policy, failure threshold,
secrets never written anywhere, and a process killed with events in its spool."""

from __future__ import annotations

import glob
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, g

from flask_ccsso import signals
from flask_ccsso.audit import AuditPipeline, init_audit, parse_logging_block, verify_chain
from flask_ccsso.audit.settings import SinkSettings
from flask_ccsso.audit.sinks.base import Sink
from flask_ccsso.audit.sinks.sqlalchemy import audit_table
from tests.support.audit import PG_URL, SECRETS, fast_block, make_app, secret_free, wait_for

ROOT = Path(__file__).resolve().parents[2]


class ListSink(Sink):
    """Keeps what it receives; can be held shut with ``gate``."""

    def __init__(self, audit, spool_dir, name="list"):
        super().__init__(SinkSettings(type="logging", name=name), audit, spool_dir=spool_dir)
        self.got = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def write_batch(self, events):
        self.entered.set()
        assert self.gate.wait(20)
        self.got.extend(events)


def list_pipeline(app, tmp_path, **block):
    settings = parse_logging_block(fast_block(**block))
    sink = ListSink(settings, str(tmp_path / "spool"))
    pipeline = AuditPipeline(app, settings, sinks=[sink]).start()
    return pipeline, sink


def test_signals_in_a_request_become_events(tmp_path):
    app = make_app(tmp_path)
    pipeline, sink = list_pipeline(app, tmp_path)
    try:
        client = app.test_client()
        client.post("/send/user_logged_in", json={"provider": "okta", "method": "saml", "step_up": True},
                    headers={"X-Request-ID": "req-42", "User-Agent": "pytest-ua"})
        client.get("/skill", headers={"X-Request-ID": "has spaces in it"})
        client.post("/send/permission_denied", json={"skill": "db", "skills": ["db"], "reason": "missing_group",
                                                     "condition": "allowedGroups", "via": "session"})
        client.post("/send/session_revoked", json={"_identity": False, "subject": "00u-bob", "provider": "okta",
                                                   "count": 2, "reason": "operator"})
        assert pipeline.flush(5)
    finally:
        pipeline.close()
    assert not (tmp_path / "spool").exists()  # a healthy sink leaves no spool files behind
    login, skill, denied, revoked = [e.to_dict() for e in sink.got]
    assert login["request_id"] == "req-42" and login["user_agent"] == "pytest-ua"
    assert login["client_ip"] == "127.0.0.1" and login["data"] == {"method": "saml", "step_up": True}
    assert login["claims"] == {"department": "ops", "name": "Ada"}
    assert login["groups"] == ["db-admins", "staff"]
    assert len(skill["request_id"]) == 32 and skill["request_id"] != "has spaces in it"
    assert skill["skill"] == "database-migration" and skill["via"] == "session"
    assert denied["outcome"] == "denied" and denied["reason"] == "missing_group"
    assert denied["data"] == {"skills": ["db"], "condition": "allowedGroups"}
    assert revoked["actor"] == {"subject": "00u-bob", "email": None} and revoked["data"] == {"count": 2}


def test_request_id_is_kept_on_g(tmp_path):
    app = Flask("rid", instance_path=str(tmp_path / "i"))
    pipeline, sink = list_pipeline(app, tmp_path)
    try:
        with app.test_request_context("/", headers={"X-Request-ID": "x" * 200}):
            signals.user_logged_out.send(app, identity=None, provider="okta", idp_logout=True)
            signals.user_logged_out.send(app, identity=None, provider="okta", idp_logout=False)
            rid = g.ccsso_request_id
        pipeline.flush(5)
    finally:
        pipeline.close()
    assert len(rid) == 32 and [e.request_id for e in sink.got] == [rid, rid]


def test_only_its_own_app_and_level_audit_filters(tmp_path):
    app1, app2 = make_app(tmp_path, "one"), make_app(tmp_path, "two")
    pipeline, sink = list_pipeline(app1, tmp_path, level="audit", events=["auth.login"])
    try:
        for app in (app1, app2):
            app.test_client().get("/skill")
            app.test_client().post("/send/user_logged_in", json={"provider": "okta"})
        assert pipeline.emit("skill.invoked", skill="x") is None
        assert pipeline.emit("auth.login", provider="direct").provider == "direct"
        pipeline.flush(5)
    finally:
        pipeline.close()
    assert [e.type for e in sink.got] == ["auth.login", "auth.login"]
    assert [e.provider for e in sink.got] == ["okta", "direct"]


def test_queue_full_policy(tmp_path, caplog):
    """Security events overflow to the spool; low-value ones are dropped, counted and warned about."""
    caplog.set_level(logging.WARNING, "flask_ccsso.audit")
    app = make_app(tmp_path)
    pipeline, sink = list_pipeline(app, tmp_path, queueSize=5, batchSize=1)
    client = app.test_client()
    try:
        sink.gate.clear()
        client.post("/send/permission_denied", json={"skill": "first"})
        assert sink.entered.wait(5)  # the worker is stuck inside the sink now
        t0 = time.perf_counter()
        client.post("/send/skill_invoked?n=5", json={"skill": "queued"})   # fills the queue
        client.post("/send/skill_invoked?n=10", json={"skill": "extra"})   # dropped
        client.post("/send/permission_denied?n=10", json={"skill": "sec"})  # spooled
        client.post("/send/user_logged_in?n=3", json={"provider": "okta"})  # spooled
        assert time.perf_counter() - t0 < 2.0  # requests did not wait for the stuck sink
        assert sink.stats.dropped == 10 and sink.stats.overflow_spooled == 13
        assert len(sink.spool) == 13
        warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(warnings) == 1 and "skill.invoked" in warnings[0].getMessage()
        sink.gate.set()
        wait_for(lambda: pipeline.flush(1) and len(sink.spool) == 0)
    finally:
        sink.gate.set()
        pipeline.close()
    skills = [e.skill for e in sink.got]
    assert skills.count("first") == 1 and skills.count("queued") == 5 and skills.count("sec") == 10
    assert "extra" not in skills and [e.type for e in sink.got].count("auth.login") == 3
    assert len(sink.got) == 19 and len({e.id for e in sink.got}) == 19


def test_failure_threshold(tmp_path):
    now = [1_000_000.0]
    app = make_app(tmp_path)
    settings = parse_logging_block(fast_block(failureThreshold={"count": 3, "window": 60}))
    sink = ListSink(settings, str(tmp_path / "spool"))
    pipeline = AuditPipeline(app, settings, sinks=[sink], clock=lambda: now[0]).start()
    alerts = []

    def on_alert(sender, **kw):
        alerts.append(kw)

    signals.failure_threshold.connect(on_alert, app)
    client = app.test_client()

    def fail(email, addr, subject=None):
        client.post("/send/login_failed", json={"_identity": False, "provider": "okta", "reason": "invalid_token",
                                                "detail": "bad", "email": email, "subject": subject},
                    environ_base={"REMOTE_ADDR": addr})

    try:
        for i in range(3):
            fail("Eve@Example.com", f"10.0.0.{i}")
        assert alerts == [{"key_type": "user", "key": "eve@example.com", "count": 3, "window": 60}]
        fail("eve@example.com", "10.0.0.9")  # still inside the window: no second alert
        now[0] += 30
        fail("eve@example.com", "10.0.0.10")
        assert len(alerts) == 1
        now[0] += 61
        for i in range(3):
            fail("eve@example.com", f"10.0.1.{i}")
        assert len(alerts) == 2 and alerts[1]["key"] == "eve@example.com"
        for i in range(3):
            fail(None, "192.0.2.7", subject=f"sub-{i}")
        assert alerts[2] == {"key_type": "address", "key": "192.0.2.7", "count": 3, "window": 60}
        pipeline.flush(5)
    finally:
        signals.failure_threshold.disconnect(on_alert, app)
        pipeline.close()
    recorded = [e for e in sink.got if e.type == "auth.failure_threshold"]
    assert len(recorded) == 3 and all(e.outcome == "alert" for e in recorded)
    assert recorded[0].data == {"key_type": "user", "key": "eve@example.com", "count": 3, "window": 60}
    # the alert follows the failure that tripped it
    types = [e.type for e in sink.got]
    assert types[:4] == ["auth.login_failed"] * 3 + ["auth.failure_threshold"]


def test_secrets_never_written_anywhere(tmp_path, collector, caplog):
    caplog.set_level(logging.INFO, "flask_ccsso.audit")
    db = tmp_path / "audit.db"
    app = make_app(tmp_path)
    block = fast_block(destinations=[{"type": "sqlalchemy", "url": f"sqlite:///{db}"},
                                     {"type": "http", "url": collector.url + "/in", "token": "sink-token"},
                                     {"type": "logging"}])
    pipeline = init_audit(app, parse_logging_block(block))
    http = pipeline.sinks[1]
    client = app.test_client()
    leaky = {**SECRETS, "headers": {"Cookie": SECRETS["cookie"]}, "provider": "okta", "reason": "invalid_token"}
    names = ["user_logged_in", "login_failed", "token_refreshed", "skill_invoked", "permission_denied",
             "session_expired", "stepup_required", "stepup_satisfied", "user_logged_out", "backchannel_logout"]
    try:
        for name in names:
            client.post(f"/send/{name}", json=leaky, headers={"Cookie": SECRETS["cookie"],
                                                              "Authorization": "Bearer " + SECRETS["token"]})
        assert pipeline.flush(5)
        collector.stop()
        for name in names:
            client.post(f"/send/{name}", json=leaky)
        assert pipeline.flush(10) and len(http.spool) == len(names)
        spool_bytes = b"".join(Path(p).read_bytes() for p in glob.glob(str(tmp_path / "instance" / "**" / "*"),
                                                                      recursive=True) if Path(p).is_file())
        assert b"auth.login" in spool_bytes  # the spool really holds the events
        assert secret_free(spool_bytes) == []
        collector.start()
        wait_for(lambda: pipeline.flush(1) and len(http.spool) == 0 and not http.is_down)
    finally:
        pipeline.close()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        dump = json.dumps([list(map(str, r)) for r in conn.execute(sa.select(audit_table()))])
    engine.dispose()
    assert dump.count("auth.login") >= 2 and secret_free(dump) == []
    assert len(collector.events()) == 2 * len(names) and secret_free(collector.all_bodies()) == []
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert log_text.count('"type":"auth.login"') == 2 and secret_free(log_text) == []


def test_control_characters_escaped_in_log_lines(tmp_path, caplog):
    caplog.set_level(logging.INFO, "flask_ccsso.audit")
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(destinations=[{"type": "logging"}])))
    try:
        app.test_client().post("/send/login_failed", json={
            "_identity": False, "provider": "okta\r\n2024-01-01 auth.login success admin", "reason": "bad",
            "detail": "x\x1b]0;owned\x07\u2028y", "email": "a\nb@x"})
        pipeline.flush(5)
    finally:
        pipeline.close()
    (line,) = [r.getMessage() for r in caplog.records if "auth.login_failed" in r.getMessage()]
    assert not any(c in line for c in "\r\n\x1b\x07\u2028")
    event = json.loads(line)
    assert event["provider"].startswith("okta\\u000d\\u000a2024") and event["actor"]["email"] == "a\\u000ab@x"


SCRIPT = textwrap.dedent('''
    import os, sys, time
    from flask import Flask
    from flask_ccsso import signals
    from flask_ccsso.audit import init_audit, parse_logging_block
    from flask_ccsso.audit.sinks import sqlalchemy as sqlsink

    mode, spool, url, table = sys.argv[1:5]
    app = Flask("crashy", instance_path=spool)
    block = {"level": "debug", "spoolDir": spool, "batchSize": 20, "flushInterval": 0.05, "retryAttempts": 1,
             "retryBackoff": 0.01, "maxBackoff": 0.1,
             "destinations": [{"type": "sqlalchemy", "name": "db", "url": url, "table": table}]}
    if mode == "replay-and-die":
        original = sqlsink.SQLAlchemySink.write_batch
        calls = []
        def write_then_die(self, events):
            original(self, events)
            calls.append(len(events))
            if len(calls) == 3:
                os._exit(9)  # committed to the database, not yet removed from the spool
        sqlsink.SQLAlchemySink.write_batch = write_then_die
    pipeline = init_audit(app, parse_logging_block(block))
    sink = pipeline.sinks[0]
    if mode == "emit-and-die":
        for i in range(120):
            with app.test_request_context("/", environ_base={"REMOTE_ADDR": "10.1.1.1"}):
                signals.permission_denied.send(app, identity=None, skill=f"s{i}", skills=[f"s{i}"],
                                               reason="not_authenticated", condition=None, via="session",
                                               endpoint="x", access_token="at-SECRET-4f1e9c7a")
        assert pipeline.flush(20), "not spooled"
        print("spooled", len(sink.spool), flush=True)
        os._exit(9)
    if mode == "emit-and-exit":
        for i in range(50):
            with app.test_request_context("/"):
                signals.user_logged_out.send(app, identity=None, provider="okta", idp_logout=False)
        sys.exit(0)  # no flush: the atexit hook must deliver the queue
    deadline = time.monotonic() + 30
    while (len(sink.spool) or sink.is_down) and time.monotonic() < deadline:
        time.sleep(0.02)
    ok = pipeline.flush(10)
    print("done", ok, len(sink.spool), sink.stats.replayed, flush=True)
''')


def run(tmp_path, *args):
    script = tmp_path / "crashy.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(check=False, args=[sys.executable, "-W", "error", str(script), *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.postgres
def test_killed_process_spool_is_replayed_exactly(tmp_path, pg_table):
    engine, table = pg_table
    spool = str(tmp_path / "spool")
    dead_url = "postgresql+psycopg://postgres@127.0.0.1:1/test"

    # 1. the database is unreachable: 120 events go to the spool, then the process is killed
    p = run(tmp_path, "emit-and-die", spool, dead_url, table)
    assert p.returncode == -9 or p.returncode == 9, p.stderr
    assert "spooled 120" in p.stdout, p.stderr
    spool_file = Path(spool) / "ccsso-audit-db.spool.sqlite3"
    assert spool_file.exists()
    assert secret_free(b"".join(f.read_bytes() for f in Path(spool).iterdir() if f.is_file())) == []

    # 2. database back; the new process replays and is killed after the 3rd batch was committed
    #    but before it left the spool
    p = run(tmp_path, "replay-and-die", spool, PG_URL, table)
    assert p.returncode in (9, -9), p.stderr
    t = audit_table(table)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 60

    # 3. a third process finishes: the 3rd batch is delivered again and de-duplicated by event id
    p = run(tmp_path, "replay", spool, PG_URL, table)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:3] == ["done", "True", "0"], p.stdout
    assert int(p.stdout.split()[3]) == 120 - 40  # replayed here: everything but the two deleted batches
    with engine.connect() as conn:
        skills = conn.execute(sa.select(t.c.skill).order_by(t.c.seq)).scalars().all()
    assert skills == [f"s{i}" for i in range(120)]  # every event once, in order
    assert verify_chain(engine, table) == (True, None)


def test_normal_exit_flushes_via_atexit(tmp_path):
    spool = str(tmp_path / "spool")
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    p = run(tmp_path, "emit-and-exit", spool, url, "ccsso_audit_events")
    assert p.returncode == 0, p.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ccsso_audit_events")).scalar() == 50
    engine.dispose()
