"""Audit backlog drain after a collector outage, and the crash journal's cost (a script, not a test).

    python benchmarks/bench_audit_drain.py [--rate 300] [--outage 10] [--quick]

1. Drain: events are recorded at ``--rate`` a second throughout; after 5 s the local HTTP
   collector refuses connections for ``--outage`` seconds, then comes back. Printed: how
   long after it came back the first event arrived and the spool was empty (the drain
   time), the maximum delivery delay (arrival at the collector minus the event's time)
   overall and for events recorded after the drain, and events lost / duplicated.
   The pipeline runs with its default settings (``batchSize`` 100, ``flushInterval`` 1 s,
   ``retryBackoff`` 0.5 s, ``maxBackoff`` 60 s).
2. Journal: microseconds per event on the request thread for the crash journal's
   encode + ``os.write`` (lazy events, as ``emit`` makes them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.audit.journal import Journal, encode_event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """Records (event id, event time, arrival time); ``stop()`` refuses connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, float, float]] = []
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                events = json.loads(body)
                with collector.lock:
                    collector.arrivals.extend((e["id"], float(e["detail"]), now) for e in events)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def drain(rate: float, outage: float, after: float = 10.0, cap: float = 300.0) -> dict[str, Any]:
    collector = Collector()
    spool = tempfile.mkdtemp(prefix="ccsso-drain-")
    app = Flask("drain", instance_path=spool)
    settings = parse_logging_block({
        "level": "audit", "failureThreshold": False, "spoolDir": spool,
        "destinations": [{"type": "http", "name": "siem", "url": f"http://127.0.0.1:{collector.port}/in",
                          "connectTimeout": 0.5}]})
    pipeline = init_audit(app, settings)
    sink = pipeline.sinks[0]
    emitted: list[tuple[str, float]] = []
    stop = threading.Event()

    # the event's time is carried in ``detail`` so the collector can compute the delay
    def emit() -> None:
        start = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - start < cap:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.time()
            event = pipeline.emit("auth.login", subject=f"u{n}", provider="okta", detail=repr(t))
            assert event is not None
            emitted.append((event.id, t))
            n += 1

    thread = threading.Thread(target=emit, daemon=True)
    thread.start()
    time.sleep(5.0)
    collector.stop()
    down_at = time.monotonic()
    time.sleep(outage)
    spooled_at_recovery = sink.spool.refresh()
    collector.start()
    up_at = time.monotonic()
    first_after = None
    drained_at = None
    while time.monotonic() - up_at < cap:
        with collector.lock:
            n_arrived = len(collector.arrivals)
        if first_after is None and n_arrived and collector.arrivals[-1][2] >= time.time() - 0.2:
            first_after = time.monotonic() - up_at
        if not sink.is_down and sink.spool.refresh() == 0 and len(sink._queue) < settings.batch_size:
            drained_at = time.monotonic()
            break
        time.sleep(0.05)
    time.sleep(after)
    stop.set()
    thread.join(10)
    pipeline.flush(60)
    pipeline.close()
    collector.stop()
    sent = dict(emitted)
    arrivals = collector.arrivals
    first_arrival: dict[str, float] = {}
    for event_id, _t, at in arrivals:
        first_arrival.setdefault(event_id, at)
    delays = [first_arrival[i] - t for i, t in sent.items() if i in first_arrival]
    after_drain = [first_arrival[i] - t for i, t in sent.items()
                   if i in first_arrival and drained_at is not None
                   and t >= time.time() - (time.monotonic() - drained_at)]
    return {
        "rate": rate, "outage_s": outage, "emitted": len(sent),
        "spooled_at_recovery": spooled_at_recovery,
        "first_delivery_after_recovery_s": round(first_after, 2) if first_after is not None else None,
        "drain_time_s": round(drained_at - up_at, 2) if drained_at is not None else None,
        "max_delay_s": round(max(delays), 2) if delays else None,
        "max_delay_after_drain_s": round(max(after_drain), 2) if after_drain else None,
        "lost": len(set(sent) - set(first_arrival)),
        "duplicates": len(arrivals) - len(first_arrival),
        "outage_observed_s": round(up_at - down_at, 2),
    }


def journal_cost(n: int) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="ccsso-journal-")
    app = Flask("journal", instance_path=directory)
    settings = parse_logging_block({"level": "audit", "failureThreshold": False, "spoolDir": directory,
                                    "destinations": [{"type": "http", "url": "http://127.0.0.1:9/in"}]})
    pipeline = init_audit(app, settings)
    event = pipeline._build("auth.login", {"subject": "00u-ada", "email": "ada@example.com", "provider": "okta",
                                           "method": "oidc"}, ("req-1", "203.0.113.9", "Mozilla/5.0"))
    pipeline.close(0.1)
    journal = Journal(os.path.join(directory, "j"))
    record = encode_event(event)
    best_encode = best_write = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            encode_event(event)
        t1 = time.perf_counter()
        with journal.lock:
            for _ in range(n):
                journal.append(record)
        t2 = time.perf_counter()
        best_encode = min(best_encode, (t1 - t0) / n)
        best_write = min(best_write, (t2 - t1) / n)
    journal.close(keep_files=False)
    return {"encode_us": round(best_encode * 1e6, 2), "write_us": round(best_write * 1e6, 2),
            "per_event_us": round((best_encode + best_write) * 1e6, 2), "record_bytes": len(record)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--outage", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cost = journal_cost(2000 if args.quick else 20000)
    print(f"journal: {cost['per_event_us']} µs per event on the request thread "
          f"(encode {cost['encode_us']} µs + os.write {cost['write_us']} µs, {cost['record_bytes']} bytes)")
    result = drain(args.rate, 2.0 if args.quick else args.outage, after=2.0 if args.quick else 10.0)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
