"""Audit pipeline benchmark (a script, not a test).

    python benchmarks/bench_audit.py [--events 20000] [--requests 5000] [--pg URL]

Prints:
1. events/s through the whole pipeline into PostgreSQL (hash-chained batches),
2. events/s through the pipeline to a local HTTP collector (JSON batches),
3. the cost on a request: ``app.wsgi_app(environ, start_response)`` in a loop on a
   view that sends ``skill.invoked``, with audit off / a healthy sink / a dead sink
   (connection refused, so everything is spooled), as ratios against audit off.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_ccsso import signals
from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.identity import Identity

IDENT = Identity(subject="00u-ada", provider="okta", email="ada@example.com", groups=frozenset({"staff", "db"}),
                 claims={"department": "ops"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    def __init__(self) -> None:
        self.count = 0

        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.count += body.count(b'"schema_version"')
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def block(dest: dict | None, **extra: object) -> dict:
    b: dict = {"level": "audit", "events": ["auth.login", "auth.logout", "skill.invoked", "permission.denied",
                                            "token.refreshed"],
               "includeUserClaims": True, "includeGroupMemberships": True, "batchSize": 500,
               "queueSize": 100_000, "flushInterval": 0.2, "retryAttempts": 1, "retryBackoff": 0.05,
               "maxBackoff": 1.0}
    if dest is not None:
        b["destinations"] = [dest]
    b.update(extra)
    return b


def throughput(tmp: str, dest: dict, n: int, label: str) -> float:
    app = Flask(f"bench_{label}", instance_path=os.path.join(tmp, label))
    pipeline = init_audit(app, parse_logging_block(block(dest)))
    t0 = time.perf_counter()
    for i in range(n):
        pipeline.emit("skill.invoked", identity=IDENT, skill="database-migration", via="session",
                      skills=["database-migration"], endpoint=f"e{i}")
    emitted = time.perf_counter() - t0
    ok = pipeline.flush(120)
    total = time.perf_counter() - t0
    stats = pipeline.stats
    pipeline.close()
    rate = n / total
    print(f"  {label:<12} {n} events: emit {emitted * 1e6 / n:6.1f} us/event on the caller, "
          f"delivered in {total:.2f}s -> {rate:,.0f} events/s (flushed={ok}, stats={next(iter(stats.values()))})")
    return rate


def request_cost(tmp: str, label: str, dest: dict | None, n: int, level: str = "audit") -> tuple[float, dict]:
    app = Flask(f"req_{label}", instance_path=os.path.join(tmp, "req_" + label))

    @app.get("/skill")
    def skill() -> str:
        signals.skill_invoked.send(app, identity=IDENT, skill="database-migration",
                                   skills=("database-migration",), via="session", endpoint="skill")
        return "ok"

    pipeline = init_audit(app, parse_logging_block(block(dest, level=level)))
    base = EnvironBuilder(path="/skill", headers={"User-Agent": "bench/1", "X-Request-ID": "bench-1"},
                          environ_base={"REMOTE_ADDR": "10.0.0.1"}).get_environ()

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        pass

    def loop(count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            for _chunk in app.wsgi_app(dict(base), start_response):
                pass
        return time.perf_counter() - t0

    loop(min(500, n))  # warm up
    best = min(loop(n) for _ in range(3)) / n
    pipeline.flush(60)
    stats = pipeline.stats
    pipeline.close()
    return best, (next(iter(stats.values())) if stats else {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    logging.getLogger("flask_ccsso.audit").setLevel(logging.CRITICAL)

    tmp = tempfile.mkdtemp(prefix="ccsso-bench-")
    table = f"ccsso_audit_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(args.pg)
    collector = Collector()
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print("1-2. pipeline throughput (emit -> queue -> worker -> sink, batches of 500)")
        throughput(tmp, {"type": "sqlalchemy", "url": args.pg, "table": table}, args.events, "postgresql")
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar()
        print(f"     rows in PostgreSQL: {stored}")
        throughput(tmp, {"type": "http", "url": collector.url}, args.events, "http")
        print(f"     events received by the collector: {collector.count}")

        print(f"3. request cost: app.wsgi_app() on a view sending skill.invoked, best of 3 x {args.requests}")
        dead = {"type": "http", "url": f"http://127.0.0.1:{free_port()}/ingest", "connectTimeout": 0.2}
        off, _ = request_cost(tmp, "off", None, args.requests, level="off")
        healthy, hs = request_cost(tmp, "healthy", {"type": "http", "url": collector.url}, args.requests)
        dead_t, ds = request_cost(tmp, "dead", dead, args.requests)
        print(f"  audit off      {off * 1e6:7.1f} us/request   1.00x")
        print(f"  healthy sink   {healthy * 1e6:7.1f} us/request   {healthy / off:.2f}x   "
              f"(written={hs.get('written')}, dropped={hs.get('dropped')})")
        print(f"  dead sink      {dead_t * 1e6:7.1f} us/request   {dead_t / off:.2f}x   "
              f"(spooled={ds.get('spooled')}, dropped={ds.get('dropped')}, failures={ds.get('failures')})")
    finally:
        collector.stop()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


if __name__ == "__main__":
    main()
