"""The fault suite's cluster, load driver, ledger and checks (used by tests/faults/test_faults.py
and scripts/fault_report.py).

Two portal hosts (``fault_app``; 4 sync gunicorn workers each) share a private Redis -- host A
directly, host B through a :class:`~tests.faults.services.PartitionProxy`, its network path -- and
write the audit trail to a private PostgreSQL and a local HTTP collector. A dev IdP runs in a third
gunicorn. Every request carries an ``X-Request-ID`` the test chose, so an answer the client saw can be
matched to the events the portal emitted (its ledger, see fault_app.py).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from tests.scale.cluster import COOKIE, Cluster, Proc, base_env, free_port, sign_in, wait_http

from .services import EventCollector, PartitionProxy, PostgresServer, RedisServer, wait_until

FAULTS_DIR = Path(__file__).resolve().parent
SCALE_DIR = FAULTS_DIR.parent / "scale"
HOST_WORKERS = 4
#: who may see what (the dev IdP's users): /migrations needs database-migration, /security security-audit
ALLOWED = {"/whoami": {"alice", "bob"}, "/migrations": {"alice"}, "/security": {"bob"}}
SKILL_PATHS = ("/migrations", "/security")
#: how long, after a fault ends, every emitted event may take to reach both sinks (the suite's stated bound):
#: the HTTP sink's read timeout (10 s, a request sent into a hang) + maxBackoff (1 s) + replay, with slack
DELIVERY_BOUND = 20.0
#: how long, after a store fault ends, a signed-in request may take to be served again
RECOVERY_BOUND = 10.0


# --------------------------------------------------------------------------- answers

@dataclass
class Answer:
    host: str
    path: str
    user: str | None
    rid: str
    sent: float
    took: float
    status: int | None  # None: no answer (connection error / client timeout)
    ctype: str = ""
    body: Any = None
    error: str | None = None


def ask(base: str, host: str, path: str, user: str | None, cookie: str | None, *, as_json: bool = True,
        timeout: float = 15.0) -> Answer:
    rid = uuid.uuid4().hex
    headers = {"X-Request-ID": rid, "Accept": "application/json" if as_json else "text/html"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    t0 = time.time()
    try:
        r = requests.get(f"{base}{path}", headers=headers, allow_redirects=False, timeout=timeout)
    except requests.RequestException as exc:
        return Answer(host, path, user, rid, t0, time.time() - t0, None, error=exc.__class__.__name__)
    ctype = r.headers.get("Content-Type", "")
    body: Any = None
    if "json" in ctype:
        try:
            body = r.json()
        except ValueError:
            body = r.text
    else:
        body = r.text[:200]
    return Answer(host, path, user, rid, t0, time.time() - t0, r.status_code, ctype, body)


def wrong_authorizations(answers: list[Answer]) -> list[str]:
    """Every answer that served a protected page it must not have: no session, another person's,
    a denied skill, or an ended session (:meth:`FaultCluster.load` marks those answers)."""
    bad = []
    for a in answers:
        if a.status != 200 or a.path not in ALLOWED:
            continue
        email = a.body.get("email") if isinstance(a.body, dict) else None
        if a.user is None:
            bad.append(f"{a.host}{a.path}: 200 without a session ({email})")
        elif email != f"{a.user}@example.com":
            bad.append(f"{a.host}{a.path}: 200 for {a.user}'s cookie answered as {email}")
        elif a.user not in ALLOWED[a.path]:
            bad.append(f"{a.host}{a.path}: 200 for {a.user}, who lacks the skill")
    return bad


def tally(answers: list[Answer]) -> dict[str, Any]:
    statuses = Counter(str(a.status) if a.status is not None else "no_answer" for a in answers)
    five = [a for a in answers if a.status is not None and a.status >= 500]
    return {
        "requests": len(answers),
        "statuses": dict(sorted(statuses.items())),
        "http_5xx": len(five),
        "http_500": sum(1 for a in five if a.status != 503),
        "http_503": sum(1 for a in five if a.status == 503),
        "html_503_to_json_clients": sum(1 for a in five if a.status == 503 and "json" not in a.ctype),
        "no_answer": statuses.get("no_answer", 0),
        "max_wait_s": round(max((a.took for a in answers), default=0.0), 2),
    }


# --------------------------------------------------------------------------- the cluster

@dataclass
class FaultCluster:
    tmp: Path
    redis: RedisServer
    pg: PostgresServer
    collector: EventCollector
    proxy: PartitionProxy
    scl: Cluster
    ledger: Path
    table: str
    c_port: int
    hosts: dict[str, Proc] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)
    idp: Proc | None = None
    cookies: dict[str, list[str]] = field(default_factory=dict)
    dead: list[tuple[str, str]] = field(default_factory=list)
    pg_seen: dict[str, float] = field(default_factory=dict)
    _pg_rows: dict[str, int] = field(default_factory=dict)
    _pg_lock: threading.Lock = field(default_factory=threading.Lock)
    _pg_stop: threading.Event = field(default_factory=threading.Event)

    # -- processes ---------------------------------------------------------------------

    def env(self, host: str, *, public: str | None = None, redis_url: str | None = None,
            extra: dict[str, str] | None = None) -> dict[str, str]:
        env = self.scl.portal_env(host, public=public, redis_url=redis_url or self.redis.url, audit=False)
        env["PYTHONPATH"] = os.pathsep.join([str(FAULTS_DIR), str(SCALE_DIR), str(FAULTS_DIR.parent.parent),
                                             *filter(None, [os.environ.get("PYTHONPATH")])])
        env.update(FAULT_PG_URL=self.pg.url, FAULT_PG_TABLE=self.table, FAULT_COLLECTOR_URL=self.collector.url,
                   FAULT_LEDGER_DIR=str(self.ledger))
        env.update(extra or {})
        return env

    def start_host(self, host: str, *, workers: int = HOST_WORKERS, threads: int = 0, port: int | None = None,
                   extra: dict[str, str] | None = None, wait: bool = True) -> Proc:
        if port is None:
            port = int(self.bases[host].rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        self.bases[host] = base
        redis_url = self.proxy.url if host == "host-b" else self.redis.url
        public = self.scl.a if host in ("host-a", "host-b") else base
        kind = ["-k", "gthread", "--threads", str(threads)] if threads else ["-k", "sync"]
        argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), *kind, "-b", f"127.0.0.1:{port}",
                "--graceful-timeout", "10", "--timeout", "30", "--pythonpath", f"{FAULTS_DIR},{SCALE_DIR}",
                "--log-level", "warning", "fault_app:create_app()"]
        proc = Proc(host, argv, self.env(host, public=public, redis_url=redis_url, extra=extra), self.tmp)
        self.hosts[host] = proc
        if wait:
            wait_http(proc, f"{base}/health", timeout=90)
        return proc

    def workers(self, host: str) -> list[int]:
        """The pids of a host's gunicorn workers (children of its master)."""
        master = self.hosts[host].popen.pid
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master:
                out.append(int(entry))
        return sorted(out)

    def flask(self, *args: str, host: str = "host-a", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``flask --app fault_app:create_app <args>`` with ``host``'s environment (its spool folder)."""
        redis_url = self.proxy.url if host == "host-b" else self.redis.url
        return subprocess.run([sys.executable, "-m", "flask", "--app", "fault_app:create_app", *args],
                              env=self.env(host, redis_url=redis_url), cwd=str(FAULTS_DIR), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    # -- people --------------------------------------------------------------------------

    def sign_in(self, user: str, *, start: str = "host-a", finish: str = "host-b") -> str:
        jar = requests.Session()
        sign_in(self.scl, jar, user, start=self.bases[start], finish=self.bases[finish], audited=False)
        cookie = str(jar.cookies.get(COOKIE))
        jar.close()
        return cookie

    def fresh_sessions(self) -> None:
        """Two sessions each for alice and bob, started and finished on different hosts."""
        self.cookies = {u: [self.sign_in(u, start=s, finish=f) for s, f in (("host-a", "host-b"), ("host-b", "host-a"))]
                        for u in ("alice", "bob")}

    # -- load ------------------------------------------------------------------------------

    def load(self, total: int, *, threads: int = 8, hosts: tuple[str, ...] = ("host-a", "host-b"),
             paths: tuple[str, ...] = ("/whoami", "/migrations", "/security"), deadline: float = 60.0,
             stop: threading.Event | None = None, timeout: float = 15.0, out: list[Answer] | None = None
             ) -> list[Answer]:
        """``total`` requests (fewer if ``stop`` is set or ``deadline`` seconds pass) from ``threads``
        clients: each user's cookies, no cookie, and every ended cookie, over ``paths`` and ``hosts``."""
        who: list[tuple[str | None, str | None]] = [(u, c) for u, cs in self.cookies.items() for c in cs]
        who.append((None, None))
        who.extend(self.dead[-6:])  # the latest ended sessions (each was checked everywhere when it ended)
        end = time.monotonic() + deadline
        answers: list[Answer] = [] if out is None else out  # appended as they come: a test can watch it
        lock = threading.Lock()
        counter = iter(range(total))

        def client(_n: int) -> None:
            while time.monotonic() < end and not (stop is not None and stop.is_set()):
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                user, cookie = who[i % len(who)]
                host = hosts[(i // len(who)) % len(hosts)]
                path = paths[(i // (len(who) * len(hosts))) % len(paths)]
                a = ask(self.bases[host], host, path, user, cookie, timeout=timeout)
                if (user, cookie) in self.dead and a.status == 200:
                    a.body = {"email": "ENDED SESSION SERVED"}
                with lock:
                    answers.append(a)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(client, range(threads)))
        return answers

    def background_load(self, total: int, **kw: Any) -> tuple[threading.Thread, threading.Event, list[Answer]]:
        stop = threading.Event()
        out: list[Answer] = []

        def run() -> None:
            self.load(total, stop=stop, out=out, **kw)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, stop, out

    # -- the ledger and the sinks -------------------------------------------------------------

    def emitted(self) -> dict[str, tuple[str, str, float]]:
        """Every event any portal process emitted: id -> (type, request id, epoch seconds)."""
        out: dict[str, tuple[str, str, float]] = {}
        for path in self.ledger.glob("emitted-*.log"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4:
                    out[parts[0]] = (parts[1], parts[2], float(parts[3]))
        return out

    def alerts(self) -> list[tuple[str, int, float]]:
        out = []
        for path in self.ledger.glob("alerts-*.log"):
            for line in path.read_text().splitlines():
                key, count, t = line.split()
                out.append((key, int(count), float(t)))
        return out

    def pg_ids(self) -> dict[str, int]:
        """Event id -> rows in the audit table, as the poller last saw it (see :meth:`poll_pg`)."""
        with self._pg_lock:
            return dict(self._pg_rows)

    def poll_pg(self) -> None:
        """Read the audit table every 0.2 s in a thread of its own, recording when each id first
        appeared. Fresh connections with a 1 s connect timeout: a stopped or hung server only makes
        a read fail or wait, never the test."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres"

        def loop() -> None:
            while not self._pg_stop.is_set():
                try:
                    with psycopg.connect(dsn, connect_timeout=1) as conn:
                        rows = conn.execute(f'SELECT event_id, count(*) FROM "{self.table}" GROUP BY event_id').fetchall()
                except psycopg.Error:
                    rows = None
                if rows is not None:
                    now = time.time()
                    with self._pg_lock:
                        self._pg_rows = {eid: int(n) for eid, n in rows}
                        for eid, _n in rows:
                            self.pg_seen.setdefault(eid, now)
                self._pg_stop.wait(0.2)

        threading.Thread(target=loop, daemon=True, name="pg-poller").start()

    def verify_chain(self) -> tuple[bool, str | None]:
        from flask_ccsso.audit import verify_chain

        engine = sa.create_engine(self.pg.url)
        try:
            return verify_chain(engine, self.table)
        finally:
            engine.dispose()

    def settle(self, ids: set[str], bound: float = DELIVERY_BOUND) -> dict[str, Any]:
        """Wait (at most ``bound`` s) until every id in ``ids`` reached both sinks; return the accounting."""
        deadline = time.monotonic() + bound
        t0 = time.time()
        while True:
            pg = self.pg_ids()
            first = self.collector.first_arrival()
            if ids <= pg.keys() and ids <= first.keys():
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        copies = self.collector.copies()
        emitted = self.emitted()
        missing_http = sorted(ids - first.keys())
        missing_pg = sorted(ids - pg.keys())
        return {
            "emitted": len(ids),
            "lost_http": len(missing_http),
            "lost_pg": len(missing_pg),
            "lost_types": dict(Counter(emitted[i][0] for i in set(missing_http) | set(missing_pg) if i in emitted)),
            "duplicated_http": sum(copies.get(i, 0) - 1 for i in ids if copies.get(i, 0) > 1),
            "duplicated_pg": sum(pg.get(i, 0) - 1 for i in ids if pg.get(i, 0) > 1),
            "settled_after_s": round(time.time() - t0, 2),
            "missing_http": missing_http[:5],
            "missing_pg": missing_pg[:5],
        }

    def last_arrival(self, ids: set[str]) -> float | None:
        """When the last of ``ids`` first reached its later sink (None if one never arrived)."""
        first = self.collector.first_arrival()
        times = [max(first.get(i, float("inf")), self.pg_seen.get(i, float("inf"))) for i in ids]
        last = max(times, default=0.0)
        return None if last == float("inf") else last

    def delivery_delay(self, ids: set[str], recovered: float) -> float:
        """The longest wait, after ``recovered`` (or after its emission, if later), of any of ``ids``
        for its first arrival at either sink."""
        emitted = self.emitted()
        first = self.collector.first_arrival()
        worst = 0.0
        for i in ids:
            start = max(emitted[i][2], recovered) if i in emitted else recovered
            for seen in (first.get(i), self.pg_seen.get(i)):
                if seen is not None:
                    worst = max(worst, seen - start)
        return round(worst, 2)

    def held_back(self, ids: set[str], start: float, end: float) -> dict[str, int]:
        """Of ``ids`` emitted between ``start`` and ``end``, how many reached each sink only after
        ``end`` (or not at all): proof that the fault held events back, i.e. that it was exercised."""
        emitted = self.emitted()
        first = self.collector.first_arrival()
        window = [i for i in ids if i in emitted and start <= emitted[i][2] < end]
        return {"http": sum(1 for i in window if first.get(i, end) >= end),
                "pg": sum(1 for i in window if self.pg_seen.get(i, end) >= end)}

    def missing_from_ledger(self, answers: list[Answer]) -> list[str]:
        """Skill-route answers the portal must have emitted an event for (200 skill.invoked, 401/403
        permission.denied) but its ledger lacks: the ledger is checked, not trusted."""
        # counted by the event each answer owes: the first request that meets an ended session
        # also emits session.expired (same request id), which is not this check's business
        emitted = self.emitted().values()
        by_rid = Counter((etype, rid) for etype, rid, _s in emitted)
        types: dict[str, list[str]] = {}
        for etype, rid, _s in emitted:
            types.setdefault(rid, []).append(etype)
        return [f"{a.host}{a.path} {a.status} {a.rid} emitted={types.get(a.rid, [])}" for a in answers
                if a.path in SKILL_PATHS and a.status in (200, 401, 403)
                and by_rid[("skill.invoked" if a.status == 200 else "permission.denied", a.rid)] != 1]

    def close(self) -> None:
        self._pg_stop.set()


def build_cluster(tmp: Path) -> FaultCluster:
    run = f"fault{os.getpid()}{secrets.token_hex(3)}"
    ports = set()
    while len(ports) < 4:
        ports.add(free_port())
    idp_port, a_port, b_port, c_port = sorted(ports)
    scl = Cluster(run=run, tmp=tmp, issuer=f"http://127.0.0.1:{idp_port}/devidp", a=f"http://127.0.0.1:{a_port}",
                  b=f"http://127.0.0.1:{b_port}", c_port=c_port, key_prefix=f"{run}:", table=f"audit_{run}",
                  secret_key=secrets.token_hex(32), client_secret=secrets.token_hex(16))
    ledger = tmp / "ledger"
    ledger.mkdir()
    redis_server = RedisServer(tmp)
    pg = PostgresServer()
    cl = FaultCluster(tmp=tmp, redis=redis_server, pg=pg, collector=EventCollector(), proxy=None,  # type: ignore[arg-type]
                      scl=scl, ledger=ledger, table=scl.table, c_port=c_port)
    cl.bases = {"host-a": scl.a, "host-b": scl.b}
    return cl


def start_cluster(cl: FaultCluster) -> None:
    cl.pg.init()
    cl.pg.start()
    cl.poll_pg()
    cl.redis.start()
    cl.proxy = PartitionProxy(cl.redis.port)
    idp_env = base_env()
    idp_env.update(SECRET_KEY=cl.scl.secret_key, SCALEOUT_CLIENT_SECRET=cl.scl.client_secret,
                   SCALEOUT_IDP_ISSUER=cl.scl.issuer, SCALEOUT_IDP_INSTANCE=str(cl.tmp / "idp"),
                   SCALEOUT_IDP_REDIRECTS=f"{cl.scl.a}/sso/dev/callback,http://127.0.0.1:{cl.c_port}/sso/dev/callback",
                   CCSSO_DEVIDP_ENABLED="1")
    idp_port = int(cl.scl.issuer.split(":")[2].split("/")[0])
    cl.idp = Proc("idp", [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync", "--preload",
                          "-b", f"127.0.0.1:{idp_port}",
                          "--pythonpath", str(SCALE_DIR), "--log-level", "warning", "scaleout_app:create_idp_app()"],
                  idp_env, cl.tmp)
    for host in ("host-a", "host-b"):  # in parallel: each worker imports the library (seconds of CPU)
        cl.start_host(host, wait=False)
    for host in ("host-a", "host-b"):
        wait_http(cl.hosts[host], f"{cl.bases[host]}/health", timeout=90)
    wait_http(cl.idp, f"{cl.scl.issuer}/.well-known/openid-configuration", timeout=90)


def stop_cluster(cl: FaultCluster) -> None:
    cl.collector.mode = "ok"
    cl.pg.resume()
    cl.redis.resume_quietly()
    procs = [p for p in (*cl.hosts.values(), cl.idp) if p is not None]
    for proc in procs:  # all at once: each host's workers flush their audit queues in parallel
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=15)
    if cl.proxy is not None:
        cl.proxy.close()
    cl.redis.stop()
    cl.close()
    cl.pg.remove()
    cl.collector.close()


# --------------------------------------------------------------------------- the report

class Report:
    """The per-fault figures, written as JSON after every scenario (``CCSSO_FAULT_REPORT`` or the
    pytest temp folder) -- before its assertions, so a failing scenario still reports."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self.test = ""  # the running test's node id (conftest sets it)

    def add(self, fault: str, **figures: Any) -> dict[str, Any]:
        row = self.rows.setdefault(fault, {})
        row.update(figures, test=self.test)
        self._write()
        return row

    def outcome(self, test: str, result: str) -> None:
        """Mark the rows ``test`` wrote with its outcome (``passed`` / ``failed``)."""
        for row in self.rows.values():
            if row.get("test") == test:
                row["result"] = result
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.rows, indent=2, sort_keys=True, default=str))


def ended(cl: FaultCluster, user: str, cookie: str) -> None:
    """Remember a cookie whose session ended: every later load sends it and it must never be served."""
    cl.dead.append((user, cookie))


def first_served(cl: FaultCluster, host: str, user: str, cookie: str, since: float, bound: float = RECOVERY_BOUND
                 ) -> float:
    """Seconds from ``since`` until ``host`` serves ``user`` again."""
    def ok() -> bool:
        a = ask(cl.bases[host], host, "/whoami", user, cookie, timeout=5)
        return a.status == 200 and isinstance(a.body, dict) and a.body.get("email") == f"{user}@example.com"

    wait_until(ok, bound, f"{host} to serve {user} again", interval=0.1)
    return round(time.time() - since, 2)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

__all__ = ["ALLOWED", "CSRF_RE", "DELIVERY_BOUND", "RECOVERY_BOUND", "Answer", "FaultCluster", "Report", "ask",
           "build_cluster", "ended", "first_served", "start_cluster", "stop_cluster", "tally", "wait_until",
           "wrong_authorizations"]
