"""Audit throughput end to end and what auditing costs a protected request.

    python benchmarks/bench_audit.py [--quick]      (or: python benchmarks/run.py --only audit)

1. Throughput, one background writer: ``n`` ``skill.invoked`` events (claims and
   groups included, the seed's logging block) are emitted on this thread inside
   a request context (``AuditPipeline.emit``), queued, and delivered by the sink's
   one writer thread; the clock stops when ``flush()`` says every event is
   delivered and committed. Events/s = ``n`` / that time. Beside each, in the same
   run and interleaved with it, a raw-driver baseline writes the *same* rows:

   * PostgreSQL (127.0.0.1:5432 db ``test``): the SQLAlchemy sink (COPY through
     psycopg, hash chain per batch) vs. psycopg's own ``COPY ... FROM STDIN``
     (``write_row``) of the rows the sink stored, committed;
   * HTTP: the HTTP sink (JSON batches) to a collector in a subprocess (a real
     HTTP/1.1 keep-alive server counting the events it receives) vs. urllib3
     POSTing the same bodies to the same collector on one connection.

2. Request-path cost: ``@requires_skill`` on the embedded store, identity from a
   real OIDC sign-in (``bench_request.Portals``), ``app.wsgi_app`` calls timed in
   interleaved rounds: audit off / default (``{"level": "audit"}``: ``skill.invoked``
   not recorded) / the seed's block (``skill.invoked`` recorded with claims and
   groups) / the seed's block with a dead sink (connection refused: every batch
   spooled). The cost is the request thread's CPU per call (``cpu_us``, which
   leaves out the writer thread) over audit off, in % of the audit-off request.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h

#: a real HTTP/1.1 collector (keep-alive), run as a subprocess so its CPU is not this process's GIL
COLLECTOR = textwrap.dedent('''
    import sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            n = body.count(b'"schema_version"')
            with lock:
                count[0] += n
            self._answer(b'{"ok":true}')

        def do_GET(self):
            with lock:
                self._answer(str(count[0]).encode())

        def _answer(self, payload):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
''')

IDENTITY_KW: dict[str, Any] = {"skill": "database-migration", "skills": ["database-migration"], "via": "session"}


def identity() -> Any:
    from flask_ccsso.identity import Identity

    return Identity(subject="00u-ada", provider="okta", email="ada@example.com", name="Ada Lovelace",
                    groups=frozenset({"staff", "db-admins", "engineering"}), acr="mfa", amr=("pwd", "otp"),
                    auth_time=1_700_000_000, tenant="t-1", claims={"department": "ops", "locale": "en"})


class Collector:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/ingest"

    def count(self) -> int:
        import urllib3

        return int(urllib3.request("GET", self.url, retries=False, timeout=5).data)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def seed_block(dest: dict[str, Any], n: int, tmp: str) -> dict[str, Any]:
    block = {k: v for k, v in h.SEED_LOGGING.items() if k != "destination"}
    block.update(destinations=[dest], queueSize=n + 10, spoolDir=os.path.join(tmp, "spool-" + uuid.uuid4().hex[:6]))
    return block


def pipeline_run(dest: dict[str, Any], n: int, tmp: str, bodies: list[bytes] | None = None,
                 **extra: Any) -> float:
    """Emit ``n`` events through a fresh pipeline; seconds from the first emit until all are delivered.
    ``bodies``: a list that receives each body the HTTP sink posts."""
    from flask import Flask

    from flask_ccsso.audit import init_audit, parse_logging_block

    app = Flask(f"bench_audit_{uuid.uuid4().hex[:6]}", instance_path=os.path.join(tmp, "inst"))
    pipeline = init_audit(app, parse_logging_block(dict(seed_block(dest, n, tmp), **extra)))
    ident = identity()
    try:
        sink = pipeline.sinks[0]
        sink.open()  # connect and create the table before the clock starts (the worker would do it first)
        sink._opened = True
        if bodies is not None:
            post = sink._post

            def keep(body: bytes) -> None:
                bodies.append(body)
                post(body)

            sink._post = keep
        emit = pipeline.emit
        env = h.environ("/migrations", {"User-Agent": "bench/1"})
        with app.request_context(env):
            t0 = time.perf_counter()
            for i in range(n):
                emit("skill.invoked", identity=ident, endpoint=f"e{i % 10}", **IDENTITY_KW)
            ok = pipeline.flush(300)
            elapsed = time.perf_counter() - t0
        stats = dict(pipeline.stats[sink.name])
        if not ok or stats["written"] != n:
            raise AssertionError(f"not every event was delivered: {stats}")
        return elapsed
    finally:
        pipeline.close(timeout=10)


def pg_raw_copy(table: str, rows: list[tuple[Any, ...]]) -> float:
    """psycopg's own COPY of ``rows`` into ``table``, committed: seconds."""
    import psycopg

    from flask_ccsso.audit.sinks.sqlalchemy import _COLUMNS

    with psycopg.connect(h.PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        cols = ", ".join(_COLUMNS)
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - t0


def http_raw_post(url: str, bodies: list[bytes]) -> float:
    """urllib3 POSTing ``bodies`` on one keep-alive connection: seconds."""
    import urllib3

    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(url.split(":")[2].split("/")[0]), maxsize=1, retries=False)
    headers = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    for body in bodies:
        resp = pool.urlopen("POST", "/ingest", body=body, headers=headers, preload_content=True)
        assert resp.status == 200
    elapsed = time.perf_counter() - t0
    pool.close()
    return elapsed


def _rate_row(scenario: str, secs: list[float], n: int, extra: dict[str, Any]) -> dict[str, Any]:
    med = statistics.median(secs)
    st = h.Stats(median_us=med / n * 1e6, p50_us=med / n * 1e6, p99_us=max(secs) / n * 1e6, n=n * len(secs),
                 rounds=len(secs))
    return h.row(scenario, st, extra={"events_per_s": round(n / med), **extra})


def throughput(quick: bool, tmp: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import sqlalchemy as sa

    from flask_ccsso.audit.sinks.sqlalchemy import _COLUMNS, audit_table, create_table

    n, rounds = (2_000, 1) if quick else (50_000, 5)
    batch = 1000
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []

    # -- PostgreSQL -------------------------------------------------------------------------
    why = h.pg_unavailable()
    if why:
        rows += [h.skipped("audit -> PostgreSQL, end to end", why), h.skipped("raw psycopg COPY", why)]
        targets.append(h.target("audit -> PostgreSQL, events/s (one writer)", None, 50_000, why, at_least=True))
    else:
        engine = sa.create_engine(h.PG_URL)
        names: list[str] = []
        sink_s: list[float] = []
        raw_s: list[float] = []
        try:
            for _ in range(rounds):
                table = f"ccsso_audit_bench_{uuid.uuid4().hex[:8]}"
                raw_table = table + "_raw"
                names += [table, raw_table]
                create_table(engine, raw_table)
                secs = pipeline_run({"type": "sqlalchemy", "url": h.PG_URL, "table": table}, n, tmp,
                                           batchSize=batch)
                sink_s.append(secs)
                t = audit_table(table)
                with engine.connect() as conn:
                    stored = [tuple(r) for r in conn.execute(sa.select(*[t.c[c] for c in _COLUMNS])
                                                             .order_by(t.c.seq))]
                assert len(stored) == n
                raw_s.append(pg_raw_copy(raw_table, stored))
        finally:
            with engine.begin() as conn:
                for name in names:
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
            engine.dispose()
        sink_rate = n / statistics.median(sink_s)
        raw_rate = n / statistics.median(raw_s)
        rows.append(_rate_row("audit -> PostgreSQL, end to end (emit -> COPY committed, one writer)", sink_s, n,
                              {"batch": batch, "x_raw_rate": round(sink_rate / raw_rate, 3)}))
        rows.append(_rate_row("raw psycopg COPY of the same rows (write_row, commit)", raw_s, n, {}))
        targets.append(h.target("audit -> PostgreSQL, events/s (one writer)", sink_rate, 50_000,
                                f"raw psycopg COPY of the same rows: {raw_rate:,.0f}/s", at_least=True))

    # -- HTTP ----------------------------------------------------------------------------------
    collector = Collector()
    sink_s, raw_s = [], []
    try:
        for _ in range(rounds):
            before = collector.count()
            bodies: list[bytes] = []  # the bodies the sink posted, posted again by the baseline
            sink_s.append(pipeline_run({"type": "http", "url": collector.url}, n, tmp, bodies, batchSize=batch))
            assert collector.count() - before == n
            before = collector.count()
            raw_s.append(http_raw_post(collector.url, bodies))
            assert collector.count() - before == n
    finally:
        collector.close()
    sink_rate = n / statistics.median(sink_s)
    raw_rate = n / statistics.median(raw_s)
    rows.append(_rate_row("audit -> HTTP collector, end to end (emit -> POST answered, one writer)", sink_s, n,
                          {"batch": batch, "x_raw_rate": round(sink_rate / raw_rate, 3)}))
    rows.append(_rate_row("raw urllib3 POST of the same bodies (one keep-alive connection)", raw_s, n, {}))
    targets.append(h.target("audit -> HTTP collector, events/s (one writer)", sink_rate, 50_000,
                            f"raw urllib3 POST of the same bodies: {raw_rate:,.0f}/s", at_least=True))
    return rows, targets


def request_cost(quick: bool, tmp: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import bench_request as br

    batch, rounds = (20, 2) if quick else (500, 15)
    labels = {"off": "protected request, audit off",
              "default": "protected request, default audit (skill.invoked not recorded)",
              "seed": "protected request, skill.invoked recorded (claims + groups)",
              "dead": "protected request, skill.invoked recorded, dead sink (spooled)"}
    blocks = {"off": {"level": "off"}, "default": {"level": "audit"},
              "seed": br.audit_block("on", tmp), "dead": br.audit_block("dead", tmp)}
    portals = br.Portals(tmp, "benchaudit")
    contenders: dict[str, Any] = {}
    try:
        portals.start()
        orig = br.audit_block
        apps = {}
        for key, block in blocks.items():
            br.audit_block = lambda kind, t, _b=block: _b  # type: ignore[assignment]
            try:
                app = portals.app(f"audit_{key}", None, key)
            finally:
                br.audit_block = orig
            apps[key] = (app, portals.sign_in(app))
        portals.op.close()
        portals.op.server.server_close()
        for key, (app, env) in apps.items():
            contenders[key] = h.caller(app, env)
        stats = h.interleave(contenders, batch=batch, rounds=rounds)
    finally:
        portals.close()
    off = stats["off"]
    rows = []
    targets = []
    for key, label in labels.items():
        s = stats[key]
        cost = (s.cpu_us - off.cpu_us) / off.cpu_us * 100 if key != "off" else 0.0
        rows.append(h.row(label, s, ratios={"audit_off": h.ratio(s, off)},
                          extra={"cpu_us": round(s.cpu_us, 2), "audit_cpu_pct": round(cost, 2)}))
        if key in ("default", "seed", "dead"):
            wall = h.ratio(s, off)
            targets.append(h.target(f"audit request-path cost, {label.split(', ', 1)[1]} (% of the request)", cost,
                                    3.0, f"request-thread CPU {s.cpu_us:.1f} vs {off.cpu_us:.1f} µs; "
                                         f"wall-clock ratio {wall:.3f}" if wall else ""))
    return rows, targets


def run(quick: bool) -> dict[str, Any]:
    h.quiet_logs()
    tmp = tempfile.mkdtemp(prefix="ccsso-bench-audit-")
    try:
        rows, targets = throughput(quick, tmp)
        r2, t2 = request_cost(quick, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"name": "audit", "rows": rows + r2, "targets": targets + t2,
            "note": ("throughput rows: median_us = µs per event (1e6 / events/s), p99_us = the slowest round's; "
                     "request rows: wall-clock medians, cpu_us = request-thread CPU per call.")}


if __name__ == "__main__":
    h.standalone(run)
