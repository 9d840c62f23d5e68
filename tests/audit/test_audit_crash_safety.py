"""Audit durability under process faults, with real processes and real sinks (issue #13).

- SIGTERM while the sink hangs (an HTTP collector that accepts but never answers; a private
  PostgreSQL stopped with SIGSTOP, or whose table is held by ``LOCK TABLE``): every event
  the process recorded is delivered after a restart (it was spooled at shutdown).
- SIGKILL: every event whose ``emit`` returned is delivered by the next process (the crash
  journal), exactly once after de-duplication by id.
- An event another process spooled (the ``sessions revoke`` CLI while the collector was down)
  is delivered by the running processes without a restart, exactly once.
- A collector outage under continuous load: the backlog drains while events keep coming.
- A PostgreSQL multi-host URL whose first host is dead.

Each test waits on conditions with generous bounds; none asserts a duration.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso.audit import create_table, init_audit, parse_logging_block
from tests.support.audit import PG_URL, Collector, free_port, make_app, wait_for
from tests.support.private_pg import PrivatePostgres

ROOT = Path(__file__).resolve().parents[2]
SINK = "siem"


class Emitter:
    """``tests/audit/emitter.py`` in a subprocess; collects the ids it printed."""

    def __init__(self, tmp: Path, spool: Path, block: dict[str, Any], count: int, rate: float = 0,
                 then: str = "wait", tag: str = "emitter") -> None:
        self.log_path = tmp / f"{tag}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.audit.emitter", str(spool), json.dumps(block), str(count), str(rate), then],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.ids: list[str] = []
        self.markers: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if len(line) == 32 and all(c in "0123456789abcdef" for c in line):
                self.ids.append(line)
            elif line:
                self.markers.append(line)

    def wait_marker(self, prefix: str, timeout: float = 60) -> str:
        def seen() -> str | None:
            if self.proc.poll() is not None and not any(m.startswith(prefix) for m in self.markers):
                time.sleep(0.2)  # let the reader take the last lines
                found = [m for m in self.markers if m.startswith(prefix)]
                if found:
                    return found[0]
                raise AssertionError(f"emitter exited ({self.proc.returncode}) before {prefix}:\n{self.log()}")
            return next((m for m in self.markers if m.startswith(prefix)), None)

        return str(wait_for(seen, timeout=timeout, interval=0.05))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]


def _block(dest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"level": "audit", "failureThreshold": False, "flushInterval": 0.2, "batchSize": 50,
                             "retryAttempts": 2, "retryBackoff": 0.05, "maxBackoff": 0.5,
                             "destinations": [{"name": SINK, **dest}]}
    block.update(extra)
    return block


def _deliver_leftovers(tmp: Path, spool: Path, dest: dict[str, Any]) -> None:
    """Start a new process on the same spool directory with a working sink; it replays what
    the last one left (spool rows, a crash journal) and flushes."""
    again = Emitter(tmp, spool, _block(dest), 0, then="flush", tag="restart")
    assert again.wait_marker("FLUSHED", timeout=150) == "FLUSHED True", again.log()
    assert again.finish() == 0, again.log()


def _leftover_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("ccsso-audit-journal-*")) if spool.exists() else []


# -- a collector that accepts and never answers ---------------------------------------------

class HangingServer:
    """Accepts TCP connections on 127.0.0.1, reads what comes, never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/in"
        self.conns: list[socket.socket] = []
        self.requests = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                self.requests += 1
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_sigterm_while_the_collector_hangs_keeps_every_event(tmp_path):
    """Default timeouts: the 4 s read timeout fails the write inside the 5 s close budget, and
    what is left is spooled; the next process delivers all of it."""
    spool = tmp_path / "spool"
    hang = HangingServer()
    try:
        em = Emitter(tmp_path, spool, _block({"type": "http", "url": hang.url}), 400, rate=400)
        em.wait_marker("EMITTED")
        wait_for(lambda: hang.requests > 0, timeout=20)  # a write is in flight, unanswered
        em.signal(signal.SIGTERM)
        assert em.finish(timeout=60) == 0, em.log()
    finally:
        hang.close()
    assert len(em.ids) == 400
    assert "LOST" not in em.log(), em.log()
    collector = Collector()
    try:
        _deliver_leftovers(tmp_path, spool, {"type": "http", "url": collector.url + "/in"})
        got = [e["id"] for e in collector.events()]
    finally:
        collector.stop()
    assert set(em.ids) <= set(got), f"lost {len(set(em.ids) - set(got))}"
    assert _leftover_files(spool) == []


# -- a private PostgreSQL that hangs -----------------------------------------------------------

@pytest.fixture(name="private_pg")
def private_pg_fixture() -> Any:
    pg = PrivatePostgres(prefix="ccsso-audit-pg-")
    try:
        why = pg.available()
        if why:
            pytest.skip(why)
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


def _pg_ids(url: str, table: str = "ccsso_audit_events") -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT event_id FROM {table}")).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize("hang", ["sigstop", "lock_table"])
def test_sigterm_while_postgres_hangs_keeps_every_event(tmp_path, private_pg, hang):
    spool = tmp_path / "spool"
    dest = {"type": "sqlalchemy", "url": private_pg.url}
    engine = sa.create_engine(private_pg.url)
    create_table(engine)
    locker = None
    em = Emitter(tmp_path, spool, _block(dest), 600, rate=200)
    try:
        wait_for(lambda: len(em.ids) >= 100 and _pg_ids(private_pg.url), timeout=60)  # delivering
        if hang == "sigstop":
            private_pg.pause()
        else:
            locker = engine.connect()
            locker.begin()
            locker.execute(sa.text("LOCK TABLE ccsso_audit_events IN ACCESS EXCLUSIVE MODE"))
        em.wait_marker("EMITTED")
        em.signal(signal.SIGTERM)
        assert em.finish(timeout=60) == 0, em.log()
    finally:
        if locker is not None:
            locker.rollback()
            locker.close()
        private_pg.resume()
        engine.dispose()
    assert len(em.ids) == 600
    assert "LOST" not in em.log(), em.log()
    _deliver_leftovers(tmp_path, spool, dest)
    stored = _pg_ids(private_pg.url)
    assert len(stored) == len(set(stored))  # the table ignores an id it holds
    assert set(em.ids) <= set(stored), f"lost {len(set(em.ids) - set(stored))}"


# -- SIGKILL ------------------------------------------------------------------------------------

def test_sigkill_loses_no_event_whose_emit_returned(tmp_path):
    """The collector is slow, so events pile up in memory; SIGKILL mid-stream. The next process
    recovers the dead one's crash journal: every printed id arrives (duplicates allowed)."""
    spool = tmp_path / "spool"
    collector = Collector()
    collector.mode, collector.delay = "slow", 0.5
    try:
        em = Emitter(tmp_path, spool, _block({"type": "http", "url": collector.url + "/in"}), 2000, rate=500)
        wait_for(lambda: len(em.ids) >= 600, timeout=60)
        em.signal(signal.SIGKILL)
        em.finish()
        printed = list(em.ids)
        assert len(printed) < 2000  # killed mid-stream
        delivered_before = {e["id"] for e in collector.events()}
        assert set(printed) - delivered_before  # the kill did leave events undelivered
        collector.mode = "ok"
        _deliver_leftovers(tmp_path, spool, {"type": "http", "url": collector.url + "/in"})
        got = [e["id"] for e in collector.events()]
    finally:
        collector.stop()
    missing = set(printed) - set(got)
    assert not missing, f"lost {len(missing)} of {len(printed)}"
    assert _leftover_files(spool) == []  # the dead journal was recovered and removed
    # exactly once after de-duplication; say how many arrived twice (in flight at the kill)
    dupes = sum(n - 1 for n in collections.Counter(got).values() if n > 1)
    print(f"sigkill: printed {len(printed)}, delivered {len(set(got))} distinct, {dupes} duplicate(s)")


def test_sigkill_with_postgres_delivers_every_event_once(tmp_path, pg_table):
    _engine, table = pg_table
    spool = tmp_path / "spool"
    dest = {"type": "sqlalchemy", "url": PG_URL, "table": table}
    em = Emitter(tmp_path, spool, _block(dest, flushInterval=2.0, batchSize=500), 1500, rate=1000)
    wait_for(lambda: len(em.ids) >= 500, timeout=60)
    em.signal(signal.SIGKILL)
    em.finish()
    printed = list(em.ids)
    _deliver_leftovers(tmp_path, spool, dest)
    stored = _pg_ids(PG_URL, table)
    assert len(stored) == len(set(stored))
    assert set(printed) <= set(stored), f"lost {len(set(printed) - set(stored))} of {len(printed)}"


# -- another process's spool --------------------------------------------------------------------

def test_events_spooled_by_another_process_are_delivered_by_the_running_ones(tmp_path):
    """Two portal processes run; a third (the CLI) records events while the collector is down
    and exits, leaving them in the shared spool. When the collector is back, the running
    processes deliver them, exactly once, without a restart."""
    spool = tmp_path / "spool"
    collector = Collector()
    dest = {"type": "http", "url": collector.url + "/in", "connectTimeout": 0.5}
    portals = [Emitter(tmp_path, spool, _block(dest), 0, tag=f"portal{i}") for i in (1, 2)]
    try:
        for p in portals:
            p.wait_marker("EMITTED")
        collector.stop()
        cli = Emitter(tmp_path, spool, _block(dest, retryAttempts=1), 5, then="close", tag="cli")
        cli.wait_marker("CLOSED")
        assert cli.finish() == 0, cli.log()
        assert len(cli.ids) == 5 and collector.events() == []
        collector.start()
        wait_for(lambda: {e["id"] for e in collector.events()} >= set(cli.ids), timeout=60)
        assert all(p.proc.poll() is None for p in portals)  # no restart
        for p in portals:
            p.signal(signal.SIGTERM)
            assert p.finish() == 0, p.log()
        got = [e["id"] for e in collector.events()]
    finally:
        for p in portals:
            if p.proc.poll() is None:
                p.proc.kill()
                p.finish()
        collector.stop()
    assert sorted(got) == sorted(cli.ids)  # each exactly once, nothing else


# -- the backlog drains under load --------------------------------------------------------------

def test_backlog_drains_while_events_keep_coming(tmp_path, collector):
    """A collector that refuses connections for a while, 300 events/s throughout: once it is
    back, the spool empties while the emission goes on, and every event arrives."""
    app = make_app(tmp_path)
    settings = parse_logging_block({"level": "audit", "failureThreshold": False, "spoolDir": str(tmp_path / "spool"),
                                    "destinations": [{"type": "http", "name": SINK, "url": collector.url + "/in",
                                                      "connectTimeout": 0.5}],
                                    "retryBackoff": 0.1, "maxBackoff": 1.0})
    pipeline = init_audit(app, settings)
    sink = pipeline.sinks[0]
    ids: list[str] = []
    stop = threading.Event()

    def emit() -> None:
        start = time.monotonic()
        n = 0
        while not stop.is_set() and n < 300 * 120:  # bounded: two minutes at most
            delay = start + n / 300 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = pipeline.emit("auth.login", subject=f"u{n}", provider="okta")
            assert event is not None
            ids.append(event.id)
            n += 1

    thread = threading.Thread(target=emit, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(collector.events()) >= 300, timeout=30)
        collector.stop()
        wait_for(lambda: sink.is_down and len(sink.spool) >= 900, timeout=60)  # ~3 s of events kept
        collector.start()
        wait_for(lambda: not sink.is_down, timeout=60)
        wait_for(lambda: sink.spool.refresh() == 0 and sink.health()["in_spool"] == 0, timeout=90)
        assert thread.is_alive()  # drained while the emission went on
        emitted_at_drain = len(ids)
        wait_for(lambda: len(ids) >= emitted_at_drain + 300, timeout=30)  # and it keeps up afterwards
        assert sink.spool.refresh() < 300
    finally:
        stop.set()
        thread.join(10)
        assert pipeline.flush(30)
        pipeline.close()
    got = {e["id"] for e in collector.events()}
    assert set(ids) <= got, f"lost {len(set(ids) - got)}"


# -- PostgreSQL multi-host ---------------------------------------------------------------------

def test_multi_host_postgres_url_skips_a_dead_first_host(tmp_path, pg_table):
    _engine, table = pg_table
    dead = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{dead},127.0.0.1:5432/test?target_session_attrs=read-write"
    settings = parse_logging_block({"level": "audit", "failureThreshold": False, "spoolDir": str(tmp_path / "spool"),
                                    "destinations": [{"type": "sqlalchemy", "url": url, "table": table}]})
    assert f"127.0.0.1:{dead},127.0.0.1:5432/test" in settings.destinations[0].describe()
    app = make_app(tmp_path)
    pipeline = init_audit(app, settings)
    try:
        event = pipeline.emit("auth.login", subject="multi", provider="okta")
        assert event is not None and pipeline.flush(20)
        assert pipeline.sinks[0].stats.written == 1 and pipeline.sinks[0].stats.spooled == 0
    finally:
        pipeline.close()
    assert _pg_ids(PG_URL, table) == [event.id]


def test_multi_host_url_password_is_masked(tmp_path):
    url = "postgresql+psycopg://audit:s3cret-pw@db1:5432,db2:5433/audit?target_session_attrs=read-write"
    settings = parse_logging_block({"destinations": [{"type": "sqlalchemy", "url": url}]})
    shown = settings.destinations[0].describe()
    assert "s3cret-pw" not in shown and "audit:***@db1:5432,db2:5433/audit" in shown
    with pytest.raises(Exception, match="port"):
        parse_logging_block({"destinations": [{"type": "sqlalchemy",
                                               "url": "postgresql://u@db1:5432,db2:99999/audit"}]})


def test_journal_records_survive_and_are_read_back(tmp_path):
    """Unit-level: a damaged tail (a power cut mid-write) ends a segment's records, it does not
    stop the others; only intact records come back."""
    from flask_ccsso.audit.events import build_event
    from flask_ccsso.audit.journal import Journal, decode_event, encode_event, read_records

    journal = Journal(str(tmp_path / "j"))
    events = [build_event("auth.login", {"subject": f"s{i}", "provider": "okta"}) for i in range(3)]
    with journal.lock:
        for e in events:
            journal.append(encode_event(e))
    seg = next((tmp_path / "j").glob("*.log"))
    with open(seg, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00garbage")
    back = [decode_event(r) for r in read_records(str(seg))]
    assert [e.id for e in back if e] == [e.id for e in events]
    assert decode_event(b"\x93\x01\x02\x03") is None and decode_event(b"not msgpack\xc1") is None
    journal.close(keep_files=False)
    assert not (tmp_path / "j").exists()
    assert os.listdir(tmp_path) == []


def test_a_journal_that_cannot_be_written_is_reported_and_tried_again(tmp_path, caplog):
    from flask_ccsso.audit.events import build_event
    from flask_ccsso.audit.journal import Journal, decode_event, encode_event, read_records

    blocker = tmp_path / "journal"
    blocker.write_text("a file where the directory should be")
    journal = Journal(str(blocker))
    journal.retry_interval = 0.0
    event = build_event("auth.login", {"subject": "s", "provider": "okta"})
    with journal.lock:
        journal.append(encode_event(event))  # never raises into the request
        journal.append(encode_event(event))
    assert journal.error is not None and journal.error.startswith(("ENOTDIR", "EEXIST"))
    assert len([r for r in caplog.records if "crash journal" in r.getMessage()]) == 1  # once, not per event
    blocker.unlink()
    with journal.lock:
        journal.append(encode_event(event))
    assert journal.error is None
    segments = list(blocker.glob("*.log"))
    assert [decode_event(r).id for s in segments for r in read_records(str(s))] == [event.id]
    journal.close(keep_files=False)


def test_multi_host_url_works_for_the_sql_session_store_too():
    """The validator accepts the multi-host form for every PostgreSQL URL key, so the session
    store must open it too (not fail later with a raw parse error)."""
    import uuid

    from flask_ccsso.stores.sql import SQLStore

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()},127.0.0.1:5432/test"
    store = SQLStore.from_url(url, key_prefix=f"mh-{uuid.uuid4().hex[:8]}:")
    try:
        store.set("k", "v", 30)
        assert store.get("k") == "v"
        store.delete("k")
    finally:
        store.close()


def test_a_locked_table_fails_the_write_in_time_and_the_batch_is_spooled(tmp_path, pg_table):
    """A ``LOCK TABLE`` held by another connection: the sink's ``lock_timeout`` ends the wait
    (without it the writer waited for ever and only the shutdown could rescue the batch)."""
    engine, table = pg_table
    create_table(engine, table)
    app = make_app(tmp_path)
    settings = parse_logging_block({"level": "audit", "failureThreshold": False, "spoolDir": str(tmp_path / "spool"),
                                    "retryAttempts": 1, "flushInterval": 0.05,
                                    "destinations": [{"type": "sqlalchemy", "url": PG_URL, "table": table}]})
    locker = engine.connect()
    locker.begin()
    locker.execute(sa.text(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE'))
    pipeline = init_audit(app, settings)
    sink = pipeline.sinks[0]
    try:
        ids = [pipeline.emit("auth.login", subject=f"s{i}", provider="okta").id for i in range(5)]
        wait_for(lambda: sink.is_down and sink.spool.refresh() == 5, timeout=30)  # spooled while still locked
        locker.rollback()
        wait_for(lambda: not sink.is_down and sink.spool.refresh() == 0, timeout=60)
    finally:
        if locker.in_transaction():
            locker.rollback()
        locker.close()
        pipeline.close()
    assert sorted(_pg_ids(PG_URL, table)) == sorted(ids)
