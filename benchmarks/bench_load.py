"""A protected route under gunicorn beside the same route without the extension.

    python benchmarks/bench_load.py [--quick]      (or: python benchmarks/run.py --only load)

Starts on loopback, in one run:

* ``protected``: gunicorn, ``WORKERS`` sync workers, serving
  ``bench_load:create_portal()``: ``GET /migrations`` under
  ``@requires_skill("database-migration")``, sessions in the Redis on
  127.0.0.1:6379 (a key prefix of its own), the usual Azure Log Analytics ``logging`` block (audit
  on, ``skill.invoked`` recorded; the ``flask_ccsso.audit`` logger has a null
  handler);
* ``unprotected``: the same gunicorn settings serving
  ``bench_load:create_plain()``: the same route and JSON answer, no extension.

alice signs in once through the development IdP (a real OIDC sign-in: the
IdP's form, authorization code, PKCE, ID token; the IdP runs in this process
and is stopped before the load starts). Then a bounded load generator in this
process -- ``CLIENTS`` threads, each sending ``GET /migrations`` on a fresh
loopback connection (gunicorn's sync workers close every connection), fixed
request counts and a time limit per phase -- loads each server in turn, in
interleaved rounds. Every answer must be a 200 (anything else fails the run).

Reported per server: requests/s (median of the rounds), latency p50/p99 over
all requests, and the workers' own CPU time per request (utime + stime of the
worker processes over each phase, from /proc: what the server spends, without
the load generator that shares the machine). The target: protected
throughput >= 0.95x unprotected.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _harness as h

WORKERS = 4
CLIENTS = 8
SKILL = "database-migration"
BODY_EMAIL = "alice@example.com"


# --------------------------------------------------------------------------- the two apps (gunicorn imports these)

def create_plain() -> Any:
    """The same route and answer as the portal's, without flask-ccsso."""
    from flask import Flask, jsonify

    app = Flask("plain")

    @app.get("/migrations")
    def migrations() -> Any:
        return jsonify(ok=True, email=BODY_EMAIL)

    @app.get("/health")
    def health() -> Any:
        return {"pid": os.getpid()}

    return app


def portal_config() -> dict[str, Any]:
    public = os.environ["BENCH_PUBLIC_URL"]
    return {
        "auth": {"providers": {"dev": {
            "provider": "oidc", "clientId": "portal", "clientSecret": "${BENCH_CLIENT_SECRET}",
            "issuer": "${BENCH_IDP_ISSUER}", "redirectUri": f"{public}/sso/dev/callback",
            "audience": "api://ccsso-dev", "scopes": ["openid", "profile", "email", "migration:write"],
        }}},
        "skills": {SKILL: {"allowedGroups": ["database-admins", "senior-developers"],
                           "requiredScopes": ["migration:write"]}},
        "session": {"cookieSecure": False,
                    "store": {"type": "redis", "url": "${BENCH_REDIS_URL}", "keyPrefix": "${BENCH_KEY_PREFIX}"}},
        "logging": dict(h.AUDIT_LOGGING, spoolDir=os.path.join(os.environ["BENCH_INSTANCE"], "spool")),
    }


def create_portal() -> Any:
    from flask import Flask, jsonify

    from flask_ccsso import CCSSO, current_identity, requires_skill

    h.quiet_logs()
    app = Flask("portal", instance_path=os.environ["BENCH_INSTANCE"])
    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], CCSSO=portal_config())
    CCSSO(app)

    @app.get("/migrations")
    @requires_skill(SKILL)
    def migrations() -> Any:
        return jsonify(ok=True, email=current_identity.email)

    @app.get("/health")
    def health() -> Any:
        return {"pid": os.getpid()}

    return app


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A gunicorn master in its own process group; its workers found through /proc."""

    def __init__(self, name: str, app: str, env: dict[str, str], log_dir: Path, workers: int,
                 port: int | None = None, preimport: str = "flask") -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # The master imports flask_ccsso (or Flask) once and forks the workers, which then build
        # their own app (no --preload: each worker has its own audit thread and connections).
        boot = (f"import sys; import {preimport}; from gunicorn.app.wsgiapp import run; "
                "sys.argv[0] = 'gunicorn'; sys.exit(run())")
        argv = [sys.executable, "-c", boot, "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{self.port}",
                "--backlog", "2048", "--graceful-timeout", "5", "--timeout", "30", "--log-level", "warning", app]
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(HERE),
                                      stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def wait(self, timeout: float = 60.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.log()}")

    def workers(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat[stat.rindex(")") + 2:].split()[1]) == self.popen.pid:
                        pids.append(int(entry))
        return pids

    def cpu_seconds(self) -> float:
        """utime + stime of the workers (the master only supervises)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.workers():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self._log.close()


class InProcessIdP:
    """The development IdP served from a thread of this process (sign-in only)."""

    def __init__(self, tmp: Path, client_secret: str, redirect: str) -> None:
        from flask import Flask
        from werkzeug.serving import make_server

        from flask_ccsso.devidp import DevClient, DevIdP

        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/devidp"
        app = Flask("devidp", instance_path=str(tmp / "idp"))
        app.config["SECRET_KEY"] = secrets.token_hex(16)
        old = os.environ.get("CCSSO_DEVIDP_ENABLED")
        os.environ["CCSSO_DEVIDP_ENABLED"] = "1"
        try:
            DevIdP(app, issuer=self.issuer, enabled=True, clients=[DevClient("portal", client_secret, [redirect])])
        finally:
            if old is None:
                os.environ.pop("CCSSO_DEVIDP_ENABLED", None)
            else:
                os.environ["CCSSO_DEVIDP_ENABLED"] = old
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sign_in(portal: str, issuer: str) -> str:
    """alice through the dev IdP's form; the session cookie value."""
    import html
    import re
    from urllib.parse import urljoin, urlsplit

    import requests

    jar = requests.Session()
    r = jar.get(f"{portal}/sso/dev/login", params={"next": "/migrations"}, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    authorize = r.headers["Location"]
    assert authorize.startswith(f"{issuer}/authorize?"), authorize
    r = jar.get(authorize, allow_redirects=False, timeout=10)
    if r.status_code == 200:  # the IdP's sign-in form
        form = re.search(r'<form method="post" action="([^"]+)"', r.text)
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text)
        assert form and csrf, r.text[:500]
        r = jar.post(urljoin(authorize, html.unescape(form.group(1))), data={"csrf": csrf.group(1), "username": "alice"},
                     allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    cb = urlsplit(r.headers["Location"])
    r = jar.get(f"{portal}{cb.path}?{cb.query}", allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    value = jar.cookies.get("ccsso_session")
    assert value, "no session cookie after the callback"
    return str(value)


# --------------------------------------------------------------------------- the load generator

def load(port: int, request: bytes, *, requests_: int, seconds: float, clients: int) -> dict[str, Any]:
    """Send ``request`` ``requests_`` times from ``clients`` threads (or until ``seconds``);
    a fresh connection each. Returns the count, elapsed seconds, latencies (µs) and non-200s."""
    lock = threading.Lock()
    state = {"left": requests_, "bad": 0, "errors": 0}
    lat: list[list[float]] = [[] for _ in range(clients)]
    first_bad: list[bytes] = []
    deadline = time.monotonic() + seconds
    start_gate = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        mine = lat[i]
        start_gate.wait()
        while True:
            with lock:
                if state["left"] <= 0 or time.monotonic() > deadline:
                    return
                state["left"] -= 1
            t0 = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(request)
                    chunks = []
                    while True:
                        data = s.recv(65536)
                        if not data:
                            break
                        chunks.append(data)
            except OSError:
                with lock:
                    state["errors"] += 1
                continue
            mine.append((time.perf_counter() - t0) * 1e6)
            head = chunks[0][:16] if chunks else b""
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                with lock:
                    state["bad"] += 1
                    if not first_bad:
                        first_bad.append(b"".join(chunks)[:400])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for th in threads:
        th.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    all_lat = [x for chunk in lat for x in chunk]
    return {"n": len(all_lat), "seconds": elapsed, "lat": all_lat, "bad": state["bad"], "errors": state["errors"],
            "first_bad": first_bad[0] if first_bad else b""}


def request_bytes(port: int, path: str, cookie: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json", "Connection: close"]
    if cookie:
        lines.append(f"Cookie: ccsso_session={cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------- the run

def run(quick: bool) -> dict[str, Any]:
    rounds, per_phase, seconds = (1, 60, 5.0) if quick else (5, 3000, 12.0)
    workers = 2 if quick else WORKERS  # quick: proves it runs, sooner
    missing = h.missing("gunicorn") or h.redis_unavailable()
    if missing:
        return {"name": "load", "rows": [h.skipped("gunicorn load", missing)],
                "targets": [h.target("gunicorn: protected >= 0.95x unprotected requests/s", None, 0.95,
                                     missing, at_least=True)]}
    tmp = Path(tempfile.mkdtemp(prefix="ccsso-bench-load-"))
    prefix = f"ccsso-bench-load:{secrets.token_hex(4)}:"
    client_secret = secrets.token_hex(16)
    servers: dict[str, Server] = {}
    idp: InProcessIdP | None = None
    try:
        portal_port = free_port()
        public = f"http://127.0.0.1:{portal_port}"
        h.quiet_logs()
        with contextlib.redirect_stdout(sys.stderr):  # the dev IdP's banner
            idp = InProcessIdP(tmp, client_secret, f"{public}/sso/dev/callback")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "CCSSO_"))}
        env.update(PYTHONPATH=os.pathsep.join([str(HERE), h.ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]),
                   PYTHONUNBUFFERED="1", SECRET_KEY=secrets.token_hex(32), BENCH_PUBLIC_URL=public,
                   BENCH_CLIENT_SECRET=client_secret, BENCH_IDP_ISSUER=idp.issuer, BENCH_REDIS_URL=h.REDIS_URL,
                   BENCH_KEY_PREFIX=prefix, BENCH_INSTANCE=str(tmp / "portal"))
        servers["protected"] = Server("protected", "bench_load:create_portal()", env, tmp, workers, portal_port,
                                      preimport="flask_ccsso")
        servers["unprotected"] = Server("unprotected", "bench_load:create_plain()", env, tmp, workers)
        for s in servers.values():
            s.wait()
        cookie = sign_in(public, idp.issuer)
        requests_for = {"protected": request_bytes(portal_port, "/migrations", cookie),
                        "unprotected": request_bytes(servers["unprotected"].port, "/migrations", cookie)}
        # every worker warm (discovery and JWKS are cached at sign-in; the IdP may go now)
        for name, s in servers.items():
            warm = load(s.port, requests_for[name], requests_=workers * 10, seconds=30, clients=workers * 2)
            if warm["bad"] or warm["errors"]:
                raise RuntimeError(f"{name}: warm-up got {warm['bad']} non-200 answers and {warm['errors']} "
                                   f"connection errors: {warm['first_bad']!r}\n{s.log()}")
        idp.close()
        idp = None

        per: dict[str, dict[str, list[float]]] = {n: {"rps": [], "lat": [], "cpu": []} for n in servers}
        order = list(servers)
        for r in range(rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                s = servers[name]
                cpu0 = s.cpu_seconds()
                res = load(s.port, requests_for[name], requests_=per_phase, seconds=seconds, clients=CLIENTS)
                cpu1 = s.cpu_seconds()
                if res["bad"] or res["errors"]:
                    raise RuntimeError(f"{name}: {res['bad']} non-200 answers, {res['errors']} connection errors "
                                       f"under load: {res['first_bad']!r}\n{s.log()}")
                per[name]["rps"].append(res["n"] / res["seconds"])
                per[name]["lat"] += res["lat"]
                per[name]["cpu"].append((cpu1 - cpu0) / max(res["n"], 1) * 1e6)
    finally:
        if idp is not None:
            idp.close()
        for s in servers.values():
            s.stop()
        h.delete_redis_keys(prefix)
        shutil.rmtree(tmp, ignore_errors=True)

    rps = {n: statistics.median(v["rps"]) for n, v in per.items()}
    cpu = {n: statistics.median(v["cpu"]) for n, v in per.items()}
    rows = []
    protected = f"gunicorn {workers} sync workers, ccsso @requires_skill /migrations, Redis store, audit on"
    for name, label in (("unprotected", f"gunicorn {workers} sync workers, plain Flask /migrations"),
                        ("protected", protected)):
        lat = per[name]["lat"]
        rows.append({"scenario": label, "median_us": round(h.percentile(lat, 50), 1),
                     "p99_us": round(h.percentile(lat, 99), 1),
                     "ratios": {"unprotected": round(rps[name] / rps["unprotected"], 3)},
                     "extra": {"requests_per_s": round(rps[name], 1), "worker_cpu_us": round(cpu[name], 1),
                               "requests": len(lat), "rounds": rounds, "clients": CLIENTS}})
    value = rps["protected"] / rps["unprotected"]
    note = (f"{rps['protected']:.0f} vs {rps['unprotected']:.0f} req/s; worker CPU per request "
            f"{cpu['protected']:.0f} vs {cpu['unprotected']:.0f} µs ({cpu['unprotected'] / cpu['protected']:.3f}x); "
            f"the load generator shares the machine's {os.cpu_count()} CPUs")
    return {"name": "load", "rows": rows,
            "targets": [h.target("gunicorn: protected >= 0.95x unprotected requests/s", value, 0.95, note,
                                 at_least=True)],
            "note": (f"{workers} gunicorn sync workers per server, {CLIENTS} client threads on loopback, a new "
                     f"connection per request, {rounds} interleaved rounds of up to {per_phase} requests "
                     f"({seconds:.0f} s limit) per server; median_us/p99_us: request latency under load.")}


if __name__ == "__main__":
    h.standalone(run)
