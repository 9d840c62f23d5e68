"""Audit events survive a worker's shutdown (issue #14 item 6, issue #13 item 1).

Class 1 -- SIGTERM while the sink is slow: gunicorn (``--preload``, forked sync
workers) is stopped with SIGTERM while a real loopback HTTP collector accepts
the sink's POST but does not answer for longer than the close budget. The old
code waited 6 s for the writer thread, gave up, and the process exit took the
batch in flight and everything queued behind it: nothing spooled, nothing
logged. Now every event a worker accepted is in the spool when gunicorn exits,
a warning says how many were kept, and the next pipeline on that spool
delivers them all.

Class 2 -- several processes' first writes at once: every worker creates the
audit table on its first write, often at the same moment (the first requests
after a deploy, or the shutdown flush). PostgreSQL's "check, then CREATE" is
not atomic: the losers failed with ``UniqueViolation`` / ``DuplicateTable`` and
spooled their events as if the database were down, so a graceful stop left
them undelivered (``test_scaleout.py::test_preload_workers_deliver_audit_events``
failed under load). Now each first write lands in the table.

Every wait is for a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.audit.spool import Spool
from tests.support.audit import PG_URL, free_port, make_app, wait_for

requests = pytest.importorskip("requests")
pytest.importorskip("gunicorn")

HERE = Path(__file__).resolve().parent
SINK = "siem"


class StallingCollector:
    """A real HTTP collector on loopback that reads each POST and then, while ``stalled``,
    does not answer (the connection stays open) -- a SIEM that accepts but hangs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.received = 0  # POSTs read (answered or not)
        self.accepted: list[str] = []  # event ids answered with 200
        self.resume = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with collector.lock:
                    collector.received += 1
                if not collector.resume.wait(120):
                    return
                with collector.lock:
                    collector.accepted.extend(e["id"] for e in json.loads(body))
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the worker that sent it is gone

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/in"

    def close(self) -> None:
        self.resume.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="stalling")
def stalling_fixture() -> Iterator[StallingCollector]:
    c = StallingCollector()
    yield c
    c.close()


def _spooled_ids(spool_dir: str) -> list[str]:
    spool = Spool(spool_dir, SINK)
    try:
        return [e.id for _, e in spool.peek(100_000)]
    finally:
        spool.close()


def _gunicorn(port: int, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync", "--preload", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "30", "--timeout", "60", "--pythonpath", str(HERE), "--log-level", "warning",
            "audit_shutdown_app:create_app()"]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(HERE))


# -- class 1: SIGTERM while the sink hangs ---------------------------------------------------

def test_sigterm_while_the_collector_hangs_keeps_every_event(tmp_path: Path, stalling: StallingCollector) -> None:
    spool_dir = str(tmp_path / "spool")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_SHUTDOWN_", "CCSSO_"))}
    env.update(AUDIT_SHUTDOWN_COLLECTOR=stalling.url, AUDIT_SHUTDOWN_SPOOL=spool_dir, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = _gunicorn(port, env, log)
        try:
            base = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert proc.poll() is None, log_path.read_text(errors="replace")
                try:
                    return requests.get(f"{base}/health", timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            wait_for(up, timeout=30, interval=0.1)
            emitted: list[str] = []
            pids: set[int] = set()
            for _ in range(8):  # 8 requests x 7 events: a batch in flight, more queued behind it
                answer = requests.get(f"{base}/emit", params={"n": "7"}, timeout=10).json()
                emitted.extend(answer["ids"])
                pids.add(answer["pid"])
            wait_for(lambda: stalling.received >= len(pids), timeout=15)  # every worker is stuck in a write

            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log_path.read_text(errors="replace")
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    output = log_path.read_text(errors="replace")

    assert stalling.accepted == []  # nothing was acknowledged: all of it must be in the spool
    spooled = _spooled_ids(spool_dir)
    assert sorted(set(spooled)) == sorted(emitted), output
    assert "kept" in output and "undelivered event(s)" in output, output
    assert took < 20, took  # within the close budget, well before gunicorn's graceful timeout

    # the next process on that spool delivers every one of them once the collector answers
    stalling.resume.set()
    app = make_app(tmp_path, "next_start")
    from tests.security.audit_shutdown_app import logging_block

    pipeline = init_audit(app, parse_logging_block(logging_block(stalling.url, spool_dir)))
    try:
        wait_for(lambda: set(emitted) <= set(stalling.accepted), timeout=30)
        assert pipeline.flush(10)
    finally:
        pipeline.close(5)
    assert _spooled_ids(spool_dir) == []


# -- class 2: many first writes to a new table at once -----------------------------------------

@pytest.mark.postgres
def test_concurrent_first_writes_all_land_in_a_new_table(tmp_path: Path, pg_table: tuple[sa.Engine, str]) -> None:
    """Eight pipelines (one per worker process, as under gunicorn) write their first event to a
    table that does not exist yet, at the same moment, and are closed at once (the shutdown
    flush that raced in the scale-out test): every event is in the table, none in a spool."""
    engine, table = pg_table
    n = 8
    pipelines = []
    for i in range(n):
        block = {"level": "audit", "events": ["permission.denied"], "failureThreshold": False,
                 "flushInterval": 0.05, "retryAttempts": 1, "spoolDir": str(tmp_path / f"spool-{i}"),
                 "destinations": [{"type": "sqlalchemy", "name": "pg", "url": PG_URL, "table": table}]}
        pipelines.append(init_audit(make_app(tmp_path, f"worker_{i}"), parse_logging_block(block)))
    start = threading.Barrier(n)

    def one(p: Any) -> bool:
        start.wait(10)
        p.emit("permission.denied", reason="missing_skill", skills=("deploy",))
        return bool(p.close(10))

    with ThreadPoolExecutor(n) as pool:
        closed = list(pool.map(one, pipelines))
    assert all(closed)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar()
    spooled = {i: p.sinks[0].stats.spooled for i, p in enumerate(pipelines)}
    assert rows == n, f"{rows} of {n} events in the table; spooled per worker: {spooled}"
    assert not any(spooled.values()), spooled
