"""Audit durability under real faults (issue #10, item 10).

Class 1 -- poisoned spool: a spool row that holds no well-formed event (not
JSON, invalid UTF-8, missing keys, wrong types, NaN, a mismatched id) is
quarantined to the dead-letter file and removed; the good rows after it are
delivered to a real sink (SQLAlchemy on SQLite, or HTTP to a loopback server).

Class 2 -- sink down *and* spool unwritable: the spool directory cannot be
created (its parent is a regular file: ENOTDIR, which root cannot bypass), or
it is on a read-only tmpfs (EROFS), or on a full tmpfs (SQLITE_FULL / ENOSPC).
Events wait in the bounded in-memory backlog, arrive in order when the sink
returns (0 lost within the bound); beyond the bound exactly the overflow is
counted as lost, the alert signal fires, the health output says so, and the
log holds one line per incident with the real cause -- no traceback per event,
no masking "cannot rollback" error.

Class 3 -- a corrupt spool file at start-up is a ConfigError naming the file.

Every test waits for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso import signals
from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.audit.events import build_event
from flask_ccsso.audit.spool import Spool
from flask_ccsso.exceptions import ConfigError
from tests.support.audit import Collector, fast_block, make_app, wait_for

AUDIT_LOGGER = "flask_ccsso.audit"


# -- helpers -------------------------------------------------------------------------------

def _event(n: int) -> Any:
    return build_event("auth.login", {"provider": f"okta-{n}", "method": "oidc", "step_up": False})


def _audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(AUDIT_LOGGER)]


def _assert_quiet_log(caplog: pytest.LogCaptureFixture, max_lines: int) -> None:
    """No traceback at all, and a bounded number of warning/error lines (not one per event)."""
    records = _audit_records(caplog)
    assert [r.getMessage() for r in records if r.exc_info] == []
    loud = [r for r in records if r.levelno >= logging.WARNING]
    assert len(loud) <= max_lines, [r.getMessage() for r in loud]


def _send_logins(app: Any, n: int) -> None:
    resp = app.test_client().post(f"/send/user_logged_in?n={n}",
                                  json={"provider": "okta", "method": "oidc", "step_up": False})
    assert resp.status_code == 200


@pytest.fixture(name="alerts")
def alerts_fixture() -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []

    def on_alert(sender: Any, **kw: Any) -> None:
        if kw.get("key_type") == "audit_sink":
            got.append(kw)

    signals.failure_threshold.connect(on_alert, weak=False)
    yield got
    signals.failure_threshold.disconnect(on_alert)


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover - no mount(8)
        pytest.skip(f"cannot mount a tmpfs here ({type(exc).__name__})")
    if proc.returncode != 0:  # pragma: no cover - unprivileged runner
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10, check=False)


@pytest.fixture(name="unwritable_spool", params=["enotdir", "erofs"])
def unwritable_spool_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A spool directory nobody -- root included -- can create files in, and the errno to expect."""
    if request.param == "enotdir":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a regular file where the spool's parent directory should be\n")
        yield str(blocker / "spool"), "ENOTDIR"
        return
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "ro,size=64k")
    try:
        yield str(mnt / "spool"), "EROFS"
    finally:
        _umount(mnt)


# -- class 1: poisoned spool rows ----------------------------------------------------------

def _poison_rows(good_id: str) -> list[tuple[str, Any]]:
    """(event_id column, body column) pairs that are not well-formed events."""
    valid = json.loads(_event(99).to_json())
    wrong_actor = dict(valid, id=uuid.uuid4().hex, actor="not-an-object")
    nan = json.dumps(dict(valid, id=uuid.uuid4().hex)).replace('"data": {', '"data": {"n": NaN, ', 1)
    return [
        ("garbage-1", "this is { not json"),
        ("bad-utf8", b"\xff\xfe\x00\x80 not utf-8"),  # a BLOB: the old SELECT could not even decode it
        (uuid.uuid4().hex, json.dumps({"id": "only-an-id"})),
        (wrong_actor["id"], json.dumps(wrong_actor)),  # made the SQL sink raise AttributeError for ever
        (json.loads(nan)["id"], nan),  # NaN: not serialisable back (allow_nan=False)
        (good_id, json.dumps(dict(valid, id="someone-else"))),  # row id and body id disagree
    ]


def _poisoned_spool(spool_dir: str, name: str) -> tuple[list[str], list[tuple[str, Any]]]:
    """A real spool file: 3 good rows, the poison rows, 4 more good rows. Returns (good ids, poison)."""
    first, second = [_event(i) for i in range(3)], [_event(i) for i in range(3, 7)]
    spool = Spool(spool_dir, name)
    spool.append(first)
    spool.close()
    poison = _poison_rows(first[0].id)
    conn = sqlite3.connect(os.path.join(spool_dir, f"ccsso-audit-{name}.spool.sqlite3"))
    with conn:
        conn.executemany("INSERT INTO spool (event_id, body) VALUES (?, ?)", poison)
    conn.close()
    spool = Spool(spool_dir, name)
    spool.append(second)
    spool.close()
    return [e.id for e in first + second], poison


@pytest.mark.parametrize("kind", ["sqlalchemy", "http"])
def test_poisoned_spool_rows_are_quarantined_and_the_rest_delivered(tmp_path, collector, caplog, kind):
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    spool_dir = str(tmp_path / "spool")
    good_ids, poison = _poisoned_spool(spool_dir, "dest")
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    dest = ({"type": "sqlalchemy", "name": "dest", "url": db_url} if kind == "sqlalchemy"
            else {"type": "http", "name": "dest", "url": collector.url + "/in"})
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(destinations=[dest], spoolDir=spool_dir,
                                                              batchSize=4)))
    sink = pipeline.sinks[0]
    try:
        wait_for(lambda: pipeline.flush(0.2) and len(sink.spool) == 0, timeout=10)
    finally:
        pipeline.close()

    if kind == "sqlalchemy":
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            delivered = [r[0] for r in conn.execute(sa.text(
                "SELECT event_id FROM ccsso_audit_events ORDER BY seq"))]
        engine.dispose()
    else:
        delivered = [e["id"] for e in collector.events()]
    assert delivered == good_ids  # every good row, in order, the ones after the poison too

    assert sink.stats.quarantined == len(poison)
    dead_path = Path(sink.dead_letter.path)
    assert dead_path.parent == Path(spool_dir)
    assert stat.S_IMODE(dead_path.stat().st_mode) == 0o600
    dead = [json.loads(line) for line in dead_path.read_text().splitlines()]
    assert len(dead) == len(poison)
    for line, (_, body) in zip(dead, poison):
        raw = body if isinstance(body, bytes) else body.encode()
        assert base64.b64decode(line["raw_b64"]) == raw and line["problem"]

    # one line per quarantined row, no traceback, no row content in the log
    text = "\n".join(r.getMessage() for r in _audit_records(caplog))
    assert text.count("holds no valid event") == len(poison)
    assert "not json" not in text and "not-an-object" not in text and "okta-" not in text
    _assert_quiet_log(caplog, max_lines=len(poison) + 1)
    assert pipeline.health()["sinks"]["dest"]["quarantined"] == len(poison)


# -- class 2: sink down and spool unwritable ----------------------------------------------

def _settings(collector: Collector, spool_dir: str, backlog: int) -> Any:
    return parse_logging_block(fast_block(
        level="audit", events=["auth.login"], failureThreshold=False, batchSize=10, queueSize=100_000,
        backlogSize=backlog, spoolDir=spool_dir, destinations=[{"type": "http", "name": "siem",
                                                                 "url": collector.url + "/in",
                                                                 "connectTimeout": 0.5, "readTimeout": 0.5}]))


def _delivered(collector: Collector) -> list[str]:
    seen: set[str] = set()
    out = []
    for e in collector.events():
        if e["id"] not in seen:
            seen.add(e["id"])
            out.append(e["id"])
    return out


def test_unwritable_spool_and_dead_sink_keep_a_bounded_counted_backlog(tmp_path, collector, caplog, alerts,
                                                                       unwritable_spool):
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    spool_dir, errno_name = unwritable_spool
    backlog = 40
    collector.stop()  # the sink is down from the start
    app = make_app(tmp_path)
    pipeline = init_audit(app, _settings(collector, spool_dir, backlog))
    sink = pipeline.sinks[0]
    try:
        # within the bound: kept in memory, delivered in order once the sink is back, nothing lost
        _send_logins(app, 30)
        assert pipeline.flush(10)  # handled: with the sink down that means kept for later
        collector.start()
        wait_for(lambda: len(_delivered(collector)) == 30, timeout=10)  # the old code had lost them
        first_phase = _delivered(collector)
        assert first_phase == sorted(first_phase) and alerts == []
        assert sink.stats.lost == 0 and sink.stats.backlogged == 30 and sink.stats.spooled == 0
        assert errno_name in (sink.spool_error or "")  # the real cause, kept for the health output
        assert pipeline.health()["status"] == "degraded"  # the spool still cannot be written

        # beyond the bound: exactly the overflow is lost, counted, alerted, shown in health
        collector.stop()
        _send_logins(app, backlog + 17)
        assert pipeline.flush(10)
        wait_for(lambda: sink.stats.lost == 17, timeout=10)
        assert sink.health()["backlog"] == backlog
        wait_for(lambda: alerts, timeout=10)  # the first loss is alerted at once, the rest summed up later
        assert alerts[0]["key"] == "siem" and 1 <= alerts[0]["count"] <= 17
        health = pipeline.health()
        assert health["status"] == "losing"
        assert health["sinks"]["siem"]["lost"] == 17 and not health["sinks"]["siem"]["spool_ok"]
        collector.start()
        wait_for(lambda: len(_delivered(collector)) == 30 + backlog and sink.health()["backlog"] == 0,
                 timeout=10)
    finally:
        if collector.server is None:
            collector.start()
        pipeline.close()
    delivered = _delivered(collector)
    assert delivered == sorted(delivered)  # in order, across both outages
    assert sink.stats.lost == 17  # the 17 newest of phase two; nothing else went missing
    assert sum(a["count"] for a in alerts) == 17 and len(alerts) <= 2  # every loss alerted, not per event

    records = _audit_records(caplog)
    spool_lines = [r.getMessage() for r in records if "cannot be used" in r.getMessage()]
    assert len(spool_lines) == 1 and errno_name in spool_lines[0]  # the real cause, once
    assert len([r for r in records if "LOST" in r.getMessage()]) == len(alerts)
    _assert_quiet_log(caplog, max_lines=7)  # 6, and the crash journal's own failure in that directory, once


def test_full_disk_reports_the_real_error_and_loses_nothing(tmp_path, collector, caplog, alerts):
    """A spool that worked, then the file system filled up: the old code logged SQLite's
    "cannot rollback - no transaction is active" instead of the full disk, and lost the events."""
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "size=256k")
    try:
        spool_dir = str(mnt / "spool")
        collector.stop()
        app = make_app(tmp_path)
        pipeline = init_audit(app, _settings(collector, spool_dir, 1000))
        sink = pipeline.sinks[0]
        try:
            _send_logins(app, 5)
            wait_for(lambda: len(sink.spool) == 5, timeout=10)
            fd = os.open(mnt / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC: the file system is really full now
            finally:
                os.close(fd)
            _send_logins(app, 25)
            assert pipeline.flush(10)
            collector.start()  # the disk stays full
            wait_for(lambda: len(_delivered(collector)) == 30, timeout=10)  # the old code had lost 25
            assert sink.stats.backlogged == 25 and "FULL" in (sink.spool_error or "").upper()
            wait_for(lambda: sink.health()["backlog"] == 0, timeout=10)
        finally:
            pipeline.close()
        delivered = _delivered(collector)
        assert delivered == sorted(delivered) and len(collector.events()) == 30  # in order, none twice
        assert sink.stats.lost == 0 and alerts == []
        messages = [r.getMessage() for r in _audit_records(caplog)]
        assert not [m for m in messages if "rollback" in m.lower()]
        spool_lines = [m for m in messages if "cannot be used" in m]
        assert spool_lines and "full" in spool_lines[0].lower()
        _assert_quiet_log(caplog, max_lines=6)
    finally:
        _umount(mnt)


# -- class 3: corrupt spool file at start-up ------------------------------------------------

def test_corrupt_spool_file_is_a_config_error_naming_it(tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    path = spool_dir / "ccsso-audit-logging.spool.sqlite3"
    path.write_bytes(b"this is not an SQLite database, just garbage " * 100)
    app = make_app(tmp_path)
    with pytest.raises(ConfigError) as info:
        init_audit(app, parse_logging_block(fast_block(spoolDir=str(spool_dir))))
    assert str(path) in str(info.value) and "SQLITE_NOTADB" in str(info.value)


# -- class 4: the dead-letter file cannot be written -----------------------------------------

def test_an_unwritable_dead_letter_file_holds_bad_rows_and_delivers_the_rest(tmp_path, collector, caplog):
    """Poisoned rows while the dead-letter file cannot be written (it is a directory: EISDIR,
    which root cannot bypass). The bad rows stay in the spool (never deleted without a copy),
    the good rows around them are delivered, the spool is *not* reported as failing, and the
    log says so once -- not one "cannot be used" / "works again" pair per retry."""
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    spool_dir = str(tmp_path / "spool")
    good_ids, poison = _poisoned_spool(spool_dir, "dest")
    dead_path = Path(spool_dir) / "ccsso-audit-dest.deadletter.jsonl"
    dead_path.mkdir()
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(
        destinations=[{"type": "http", "name": "dest", "url": collector.url + "/in"}], spoolDir=spool_dir,
        batchSize=4)))
    sink = pipeline.sinks[0]
    try:
        wait_for(lambda: [e["id"] for e in collector.events()] == good_ids, timeout=10)
        wait_for(lambda: sink.stats.dead_letter_errors >= 3, timeout=10)  # retried, on a backoff
        health = pipeline.health()
        dest = health["sinks"]["dest"]
        assert "EISDIR" in (dest["dead_letter_error"] or "") and not dest["dead_letter_ok"]
        assert dest["spool_ok"] and dest["spool_error"] is None and dest["up"]
        assert dest["quarantine_pending"] == len(poison) and dest["quarantined"] == 0 and dest["lost"] == 0
        assert health["status"] == "degraded"
        assert len(sink.spool.refresh() and sink.spool) == len(poison)  # still on disk, nothing deleted

        # the file becomes writable: the held rows are quarantined, the spool empties
        dead_path.rmdir()
        wait_for(lambda: sink.stats.quarantined == len(poison) and sink.spool.refresh() == 0, timeout=10)
        assert pipeline.health()["status"] == "ok"
    finally:
        pipeline.close()
    assert len(collector.events()) == len(good_ids)  # none twice
    messages = [r.getMessage() for r in _audit_records(caplog) if r.levelno >= logging.WARNING]
    assert len([m for m in messages if "dead-letter file" in m and "cannot be written" in m]) == 1
    assert not [m for m in messages if "spool" in m and ("cannot be used" in m or "works again" in m)]
    _assert_quiet_log(caplog, max_lines=len(poison) + 3)


def test_refused_events_with_an_unwritable_dead_letter_file_are_counted_lost(tmp_path, collector, caplog, alerts):
    """The collector refuses an event (HTTP 400) and the dead-letter file cannot take it: the
    event is lost and counted (with the alert), the sink is not reported down, and the events
    around it are delivered once each."""
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "ccsso-audit-dest.deadletter.jsonl").mkdir()
    collector.mode = "poison"
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(
        destinations=[{"type": "http", "name": "dest", "url": collector.url + "/in"}], spoolDir=str(spool_dir),
        batchSize=8, flushInterval=0.2)))
    sink = pipeline.sinks[0]
    try:
        _send_logins(app, 3)
        app.test_client().post("/send/user_logged_in", json={"provider": "POISON", "method": "oidc",
                                                             "step_up": False})
        _send_logins(app, 3)
        wait_for(lambda: sink.stats.lost == 1 and len(_logins(collector)) == 6, timeout=10)
        wait_for(lambda: alerts, timeout=10)
        assert alerts[0]["key"] == "dest" and alerts[0]["count"] == 1
        health = pipeline.health()["sinks"]["dest"]
        assert health["up"] and health["spool_ok"] and "EISDIR" in health["dead_letter_error"]
        assert health["dead_lettered"] == 0 and health["in_spool"] == 0
    finally:
        pipeline.close()
    logins = _logins(collector)  # the loss alert is recorded too (auth.failure_threshold)
    assert len({e["id"] for e in logins}) == len(logins) == 6
    assert not [e for e in collector.events() if "POISON" in json.dumps(e)]
    _assert_quiet_log(caplog, max_lines=4)


def _logins(collector: Collector) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["type"] == "auth.login"]


# -- class 5: events offered after close -----------------------------------------------------

@pytest.mark.parametrize("spool_works", [True, False], ids=["spool-works", "spool-unwritable"])
def test_an_event_offered_after_close_is_spooled_or_counted(tmp_path, collector, caplog, spool_works):
    """A request thread still running while the pipeline closes (atexit, a worker recycling)
    offers its event after the sink's thread has finished. The old code raised
    ``RuntimeError: the audit spool is closed`` into that request, or, while the spool could
    not be written, parked the event in a backlog nobody would ever drain (uncounted)."""
    caplog.set_level(logging.DEBUG, AUDIT_LOGGER)
    if spool_works:
        spool_dir = str(tmp_path / "spool")
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("x\n")
        spool_dir = str(blocker / "spool")
    collector.stop()
    app = make_app(tmp_path)
    pipeline = init_audit(app, _settings(collector, spool_dir, 10))
    sink = pipeline.sinks[0]
    assert pipeline.close(5)
    lost_before = sink.stats.lost
    late = _event(1)
    assert sink.offer(late) is spool_works  # must not raise into the request
    if spool_works:
        spool = Spool(spool_dir, "siem")
        try:
            assert [e.id for _, e in spool.peek(10)] == [late.id]  # kept for the next process
        finally:
            spool.close()
        assert sink.stats.lost == lost_before
    else:
        assert sink.stats.lost == lost_before + 1 and sink.backlog == 0
        assert pipeline.health()["status"] == "losing"
        assert any("LOST" in r.getMessage() for r in _audit_records(caplog))
    _assert_quiet_log(caplog, max_lines=4)
