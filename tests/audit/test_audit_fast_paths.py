"""The audit fast paths (issue #12): events captured on the request thread and built by the
writer, canonical JSON through msgspec byte-identical to the reference form, COPY into
PostgreSQL with the hash chain per batch, the dedupe query only for batches that may be
stored already, the HTTP sink's keep-alive connection, and nothing secret in what the
request thread keeps."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from flask_ccsso import signals
from flask_ccsso.audit import AuditPipeline, init_audit, parse_logging_block, verify_chain
from flask_ccsso.audit.events import (
    GENESIS_HASH,
    AuditEvent,
    RequestInfo,
    build_event,
    canonical_json,
    canonical_json_bytes,
    capture,
    captured_from_plain,
    new_event_id,
)
from flask_ccsso.audit.settings import SinkSettings
from flask_ccsso.audit.sinks import sqlalchemy as sqlsink
from flask_ccsso.audit.sinks.base import Sink
from flask_ccsso.audit.sinks.sqlalchemy import audit_table, create_table, write_events
from flask_ccsso.identity import Identity
from tests.support.audit import PG_URL, SECRETS, fast_block, make_app, secret_free

IDENT = Identity(subject="00u-ada", provider="okta", email="ada@example.com", name="Ada",
                 groups=frozenset({"staff", "db-admins"}), acr="mfa", auth_time=1_700_000_000.5,
                 claims={"department": "ops", "access_token": SECRETS["access_token"], "id_token": SECRETS["id_token"]})


def lazy(n: int, kind: str = "auth.login", **fields: Any) -> list[AuditEvent]:
    """Events as the pipeline makes them: captured, not built yet."""
    out = []
    for i in range(n):
        kw = {"provider": "okta", "subject": f"u{i}", "email": f"u{i}@x", **fields}
        out.append(AuditEvent.from_capture(capture(kind, kw, ("rid", "10.0.0.1", "UA"), 1_700_000_000.0 + i)))
    return out


def stored_rows(engine: sa.Engine, table: str) -> list[Any]:
    t = audit_table(table)
    with engine.connect() as conn:
        return conn.execute(sa.select(t).order_by(t.c.seq)).mappings().all()


class StatementLog:
    """The SQL statements an engine runs (its own cursor executions)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._before)
        self.engine = engine

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def dedupe_queries(self) -> int:
        return sum(1 for s in self.statements if "event_id IN" in s.replace("\n", " "))

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._before)


# --------------------------------------------------------------------------- capture

def test_capture_keeps_only_allow_listed_references_and_no_secret(tmp_path):
    kwargs = {"identity": IDENT, "skill": "db", "skills": ["db"], "endpoint": "x", "headers": {"Cookie": "c"},
              **SECRETS}
    captured = capture("skill.invoked", kwargs, ("rid", "10.0.0.1", "UA"), 1.0, include_claims=True,
                       include_groups=True)
    # the allow-listed kwargs by reference (no copy), the secret-looking claims left out
    values, claims, groups = captured[10], captured[11], captured[12]
    assert set(values) == {"skill", "skills", "endpoint"} and values["skills"] is kwargs["skills"]
    assert groups is IDENT.effective_groups
    assert claims == {"department": "ops", "name": "Ada", "acr": "mfa", "auth_time": 1_700_000_000.5}
    # what a crash journal writes of it on the request thread: msgpack, no secret
    packed = msgspec.msgpack.encode(captured)
    assert secret_free(packed) == [] and secret_free(repr(captured)) == []
    again = captured_from_plain(msgspec.msgpack.decode(packed))
    assert again is not None
    rebuilt = AuditEvent.from_capture(again)
    assert rebuilt.to_json() == AuditEvent.from_capture(captured).to_json()  # same id, same bytes
    assert captured_from_plain(["skill.invoked", 1.0, "not-an-id", *[None] * 10]) is None
    assert captured_from_plain({"type": "x"}) is None


class KeepingSink(Sink):
    """Keeps what it is given without reading a field of it."""

    def __init__(self, audit: Any, spool_dir: str) -> None:
        super().__init__(SinkSettings(type="logging", name="keep"), audit, spool_dir=spool_dir)
        self.got: list[AuditEvent] = []

    def write_batch(self, events: Any) -> None:
        self.got.extend(events)


def test_the_request_thread_builds_nothing(tmp_path):
    """In a request the pipeline only captures; the event is built when something reads it."""
    app = make_app(tmp_path)
    settings = parse_logging_block(fast_block())
    sink = KeepingSink(settings, str(tmp_path / "spool"))
    pipeline = AuditPipeline(app, settings, sinks=[sink]).start()
    try:
        with app.test_request_context("/", headers={"User-Agent": "UA/1"}):
            signals.skill_invoked.send(app, identity=IDENT, skill="db", skills=["db"], via="session",
                                       endpoint="x")
        assert pipeline.flush(5)
    finally:
        pipeline.close()
    (event,) = sink.got
    assert event.captured is not None
    assert "outcome" not in vars(event) and "_json" not in vars(event)  # not built, not encoded
    assert event.outcome == "success" and event.user_agent == "UA/1"  # built on first read
    assert "access_token" not in event.claims and event.groups == ("db-admins", "staff")
    assert secret_free(event.to_json()) == []


def test_unrecorded_signals_get_no_receiver(tmp_path):
    """Default level: skill.invoked is not recorded, so it has no receiver and senders skip it."""
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block({"level": "audit", "destinations": [{"type": "logging"}]}))
    try:
        assert not signals.skill_invoked.receivers_for(app) or not list(signals.skill_invoked.receivers_for(app))
        assert list(signals.user_logged_in.receivers_for(app))
    finally:
        pipeline.close()
    app2 = make_app(tmp_path, "two")
    pipeline = init_audit(app2, parse_logging_block({"level": "audit", "events": ["skill.invoked"]}))
    try:
        assert list(signals.skill_invoked.receivers_for(app2))
    finally:
        pipeline.close()


def test_ids_differ_in_a_forked_child():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, ",".join(new_event_id(1_700_000_000.0) for _ in range(50)).encode())
        os._exit(0)
    os.close(w)
    parent = {new_event_id(1_700_000_000.0) for _ in range(50)}
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    child = set(data.decode().split(","))
    assert len(child) == 50 and not parent & child
    assert {i[13:16] for i in parent} != {i[13:16] for i in child} or {i[16:] for i in parent}.isdisjoint(
        {i[16:] for i in child})


# --------------------------------------------------------------------------- canonical JSON

@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, 300.0, 1e-4, 9.99e15, 1e16, 1e-5, 2.5e-07, 1.7976931348623157e308,
                                   12345678901234567890, 2**63, -(2**63) - 1, "é\"\\\u2028\x7f", True, None])
def test_msgspec_bytes_equal_the_reference_form(value):
    """Every value an event can hold encodes to the very bytes ``json.dumps`` gives (the hash input)."""
    e = build_event("token.refreshed", {"identity": IDENT, "expires_at": value},
                    request=RequestInfo("r", "1.2.3.4", "ua"), include_claims=True, include_groups=True)
    assert e.to_json_bytes() == canonical_json(e.to_dict()).encode()
    nested = {"b": [value, {"z": value, "a": [value]}], "a": value}
    assert canonical_json_bytes(nested) == canonical_json(nested).encode()


def test_lone_surrogates_are_escaped_not_fatal():
    ident = Identity(subject="s\ud800", provider="okta", claims={"department": "x\udfffy"})
    e = build_event("auth.login", {"identity": ident}, include_claims=True)
    text = e.to_json()
    assert "\\ud800" in text and "x\\udfffy" in json.loads(text)["claims"]["department"]
    assert e.to_json_bytes() == text.encode()


# --------------------------------------------------------------------------- PostgreSQL

@pytest.mark.postgres
def test_copy_path_round_trips_awkward_values_and_chains(pg_table, monkeypatch):
    engine, table = pg_table
    t = create_table(engine, table)
    copies = []
    real = sqlsink._copy_rows

    def counting(conn, name, rows):
        copies.append(len(rows))
        return real(conn, name, rows)

    monkeypatch.setattr(sqlsink, "_copy_rows", counting)
    awkward = ["back\\slash", "tab\there", "new\nline\r", "\\N", "é😀", "quote\"", "\x00nul", ""]
    events = [AuditEvent.from_capture(capture("auth.login_failed", {"provider": v, "detail": v, "reason": v,
                                                                    "email": v},
                                              (v, v, v), 1_700_000_000.0)) for v in awkward]
    # an event read back from a spool may hold raw control characters: COPY must escape them too
    raw = dict(build_event("auth.logout", {"provider": "okta"}).to_dict(), provider="a\tb\nc\\d", detail="\\N")
    events.append(AuditEvent.from_dict(raw))
    assert write_events(engine, t, events, dedupe=False) == len(events)
    assert copies == [len(events)]
    rows = stored_rows(engine, table)
    assert [r["event"] for r in rows] == [e.to_json() for e in events]
    assert [r["provider"] for r in rows] == [e.provider for e in events]
    assert rows[-1]["provider"] == "a\tb\nc\\d" and rows[-1]["reason"] is None
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert verify_chain(engine, table) == (True, None)


@pytest.mark.postgres
def test_chain_across_batches_retries_and_spool_replays(pg_table):
    engine, table = pg_table
    t = create_table(engine, table)
    log = StatementLog(engine)
    try:
        first, second = lazy(30), lazy(30)
        assert write_events(engine, t, first, dedupe=False) == 30
        assert write_events(engine, t, second, dedupe=False) == 30
        assert log.dedupe_queries() == 0  # fresh batches: no dedupe query
        # a retry of a fresh batch whose commit's answer was lost: the UNIQUE constraint refuses
        # it and it is written again with the dedupe query (nothing twice, chain unbroken)
        third = lazy(10)
        assert write_events(engine, t, second[20:] + third, dedupe=False) == 10
        assert log.dedupe_queries() == 1
        # a spool replay (events rebuilt from their JSON), partly stored already
        replayed = [AuditEvent.from_dict(json.loads(e.to_json())) for e in third[5:] + lazy(5)]
        assert write_events(engine, t, replayed, dedupe=True) == 5
        assert log.dedupe_queries() == 2
    finally:
        log.close()
    rows = stored_rows(engine, table)
    assert len(rows) == 75 and len({r["event_id"] for r in rows}) == 75
    assert all(rows[i]["prev_hash"] == rows[i - 1]["hash"] for i in range(1, 75))
    assert verify_chain(engine, table) == (True, None)


@pytest.mark.postgres
def test_sink_checks_stored_ids_only_for_replayed_batches(pg_table, tmp_path):
    engine, table = pg_table
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(
        batchSize=50, destinations=[{"type": "sqlalchemy", "url": PG_URL, "table": table}])))
    sink = pipeline.sinks[0]
    try:
        assert pipeline.flush(10)
        sink.open()
        log = StatementLog(sink.engine)
        client = app.test_client()
        client.post("/send/user_logged_in?n=120", json={"provider": "okta", "method": "oidc", "step_up": False})
        assert pipeline.flush(10)
        assert log.dedupe_queries() == 0 and log.statements  # fresh batches went in without it
        # events kept in the spool (as after an outage) come back rebuilt from JSON: checked
        stored = stored_rows(engine, table)[:40]
        sink.spool.append([AuditEvent.from_dict(json.loads(r["event"])) for r in stored] + lazy(3))
        sink.spool.refresh()
        with sink._cv:
            sink._cv.notify_all()
        assert pipeline.flush(10)
        from tests.support.audit import wait_for

        wait_for(lambda: len(sink.spool) == 0)
        assert log.dedupe_queries() >= 1
        log.close()
    finally:
        pipeline.close()
    rows = stored_rows(engine, table)
    assert len(rows) == 123 and len({r["event_id"] for r in rows}) == 123
    assert verify_chain(engine, table) == (True, None)


@pytest.mark.postgres
def test_chains_written_by_the_old_encoder_still_verify(pg_table):
    """Rows written by the previous writer (json.dumps text, SQLAlchemy executemany) followed by
    rows from the COPY writer form one chain that verifies; an edit is still found."""
    engine, table = pg_table
    t = create_table(engine, table)
    old = [build_event("token.refreshed", {"provider": "okta", "subject": f"o{i}", "expires_at": 1e16 + i})
           for i in range(5)]
    prev = GENESIS_HASH
    rows = []
    for e in old:
        data = e.to_dict()
        row = sqlsink._row(data, canonical_json(data), prev)  # exactly the old writer's row
        prev = row["hash"]
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
    write_events(engine, t, lazy(10), dedupe=False)
    assert verify_chain(engine, table) == (True, None)
    victim = stored_rows(engine, table)[7]
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.seq == victim["seq"]).values(event=victim["event"].replace("u2", "u9")))
    assert verify_chain(engine, table) == (False, victim["event_id"])


# --------------------------------------------------------------------------- HTTP

class KeepAliveCollector:
    """A real HTTP/1.1 server that counts the TCP connections it accepted."""

    def __init__(self) -> None:
        self.connections: set[tuple[str, int]] = set()
        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.connections.add(self.client_address)
                outer.events.extend(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_http_sink_reuses_one_connection(tmp_path):
    collector = KeepAliveCollector()
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(batchSize=10, destinations=[
        {"type": "http", "url": collector.url, "token": "sink-token"}])))
    try:
        client = app.test_client()
        for _ in range(5):
            client.post("/send/user_logged_in?n=20", json={"provider": "okta", **SECRETS})
            assert pipeline.flush(10)
    finally:
        pipeline.close()
        collector.close()
    assert len(collector.events) == 100 and len({e["id"] for e in collector.events}) == 100
    assert len(collector.connections) == 1  # ten batches, one keep-alive connection
    assert secret_free(json.dumps(collector.events)) == []
