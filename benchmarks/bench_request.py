"""What one protected request costs, beside bare Flask, Flask-Login and Flask-Session on Redis.

    python benchmarks/bench_request.py [--quick]      (or: python benchmarks/run.py --only request)

Every contender serves one GET in this process and run, called through
``app.wsgi_app(environ, start_response)`` directly (no test client, no HTTP
server) with a prebuilt environ copied per call, timed in interleaved rounds
(``_harness.interleave``); the apps are built in ``_contenders.py``:

* ``bare Flask``: a view returning a string -- the floor;
* ``Flask-Login``: ``@login_required``, the user loaded from Flask's signed
  cookie session by a trivial ``user_loader``;
* ``Flask-Session Redis``: Flask-Session 0.8 on the Redis at 127.0.0.1:6379,
  ``SESSION_REFRESH_EACH_REQUEST=False`` (one GET per request, no write), a
  view that answers 401 without ``session["user"]``;
* ``ccsso <store>``: flask-ccsso ``@requires_skill("database-migration")`` (the
  skills of the usual guides) on each store: embedded (SQLite file in the instance folder),
  Redis, SQLAlchemy on PostgreSQL (127.0.0.1:5432 db ``test``) and on a SQLite
  file. The identity comes from a real OIDC sign-in (authorization code, PKCE,
  RS256 ID token) against the in-process test provider
  (``tests/support/local_op.py``), which is shut down before timing starts.
  "audit on" is the ``logging`` block of the usual Azure Log Analytics guides
  (``_harness.AUDIT_LOGGING``: ``skill.invoked`` recorded with claims and
  groups; the ``flask_ccsso.audit`` logger gets a null handler); "audit off" is
  ``level: off``; "dead sink" is that block with one HTTP sink on a
  closed loopback port instead (every batch fails and is spooled).

* ``floor``: one loopback Redis GET of a 1 KB value through redis-py, and the
  same GET written and read on a connected socket (no client library).

Per request it also counts, over a separate untimed run: store round trips
and writes (Redis commands sent, a pipeline counting one; SQL statements and
commits), outbound connections and HTTP requests -- the steady state must be
one read, no write, no connection.

``median_us`` and every ratio are wall-clock (see ``_harness``); ``cpu_us`` in
``extra`` is the request thread's own CPU time per call (``time.thread_time``
per batch), which leaves out what the audit writer thread spends: the
audit-cost targets use it, since they are about the request path.

``python benchmarks/bench_request.py --profile redis|embedded|pg|sqlite [--calls N]
[--audit on|off|dead]`` prints pyinstrument's call tree of N protected requests
(the Profiles section of benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _contenders as c
import _harness as h
from _contenders import BASELINES, audit_block, bare_app, flask_login_app, flask_session_app, ratios_of


class Portals(c.Portals):
    """``_contenders.Portals``, its ``logging`` block looked up in this module: bench_audit.py
    replaces ``bench_request.audit_block`` to give its apps other blocks."""

    def logging_block(self, audit: str) -> dict[str, Any]:
        return audit_block(audit, self.tmp)


# --------------------------------------------------------------------------- the floor

def redis_floor(prefix: str) -> tuple[Any, Any, Any]:
    """The floor of a Redis-backed request: one redis-py GET, and one GET written and read
    on a connected socket (no client library), of a 1 KB value; and what to close."""
    import redis

    client = redis.Redis.from_url(h.REDIS_URL)
    key = prefix + "floor"
    client.set(key, "x" * 1024, ex=600)

    def redis_py_get() -> object:
        return client.get(key)

    sock = socket.create_connection(("127.0.0.1", int(h.REDIS_URL.rsplit(":", 1)[1].split("/")[0])))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cmd = f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode()
    want = len(b"$1024\r\n") + 1024 + 2

    def raw_get() -> object:
        sock.sendall(cmd)
        got = sock.recv(65536)
        while len(got) < want:
            got += sock.recv(65536)
        return got

    def close() -> None:
        sock.close()
        client.close()

    return redis_py_get, raw_get, close


def cleanup_pg(prefix: str) -> None:
    """Delete this run's rows from the SQL store's tables on PostgreSQL."""
    with contextlib.suppress(Exception):
        import sqlalchemy as sa

        engine = sa.create_engine(h.PG_URL)
        with engine.begin() as conn:
            for table in ("ccsso_kv", "ccsso_kv_set"):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE key LIKE :p"), {"p": prefix + "%"})
        engine.dispose()


# --------------------------------------------------------------------------- the run

def run(quick: bool) -> dict[str, Any]:
    h.quiet_logs()
    h.COUNTER.install()
    batch, rounds, io_calls = (20, 2, 10) if quick else (600, 15, 300)
    tmp = tempfile.mkdtemp(prefix="ccsso-bench-request-")
    prefix = f"benchreq{uuid.uuid4().hex[:8]}:"
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    contenders: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    labels: dict[str, str] = {}
    portals = Portals(tmp, prefix)
    closers: list[Any] = []
    no_redis = h.redis_unavailable()
    no_pg = h.pg_unavailable()
    try:
        app, env = bare_app()
        contenders["bare_flask"] = h.caller(app, env)
        labels["bare_flask"] = "bare Flask"
        labels["flask_login"] = "Flask-Login @login_required"
        why = h.missing("flask_login", "flask-login")
        if why:
            skipped["flask_login"] = why
        else:
            app, env = flask_login_app()
            contenders["flask_login"] = h.caller(app, env)
        labels["flask_session_redis"] = "Flask-Session Redis (no refresh write)"
        why = h.missing("flask_session", "flask-session") or no_redis
        if why:
            skipped["flask_session_redis"] = why
        else:
            app, env = flask_session_app(prefix)
            contenders["flask_session_redis"] = h.caller(app, env)

        labels["floor_redis_py"] = "floor: one redis-py GET (loopback, 1 KB)"
        labels["floor_redis_raw"] = "floor: one GET on a connected socket (no client library)"
        if no_redis:
            skipped["floor_redis_py"] = skipped["floor_redis_raw"] = no_redis
        else:
            contenders["floor_redis_py"], contenders["floor_redis_raw"], close_floor = redis_floor(prefix)
            closers.append(close_floor)

        stores: dict[str, tuple[str, dict[str, Any] | None, str | None]] = {
            "embedded": ("embedded", None, None),
            "redis": ("Redis", {"type": "redis", "url": h.REDIS_URL, "keyPrefix": prefix}, no_redis),
            "pg": ("SQL PostgreSQL", {"type": "sqlalchemy", "url": h.PG_URL, "keyPrefix": prefix}, no_pg),
            "sqlite": ("SQL SQLite", {"type": "sqlalchemy", "url": "sqlite:///{instance}/state.sqlite"}, None),
        }
        plan = [(s, a) for a in ("on", "off") for s in stores] + [("embedded", "dead"), ("redis", "dead")]
        portals.start()
        envs: dict[str, tuple[Any, dict[str, Any]]] = {}
        for store, audit in plan:
            title, cfg, why = stores[store]
            key = f"ccsso_{store}_{audit}"
            labels[key] = f"ccsso @requires_skill, {title}, " + {"on": "audit on", "off": "audit off",
                                                                   "dead": "audit on, dead sink"}[audit]
            if why:
                skipped[key] = why
                continue
            app = portals.app(key, cfg, audit)
            envs[key] = (app, portals.sign_in(app))
        portals.stop_provider()  # nothing below may reach the identity provider
        for key, (app, env) in envs.items():
            contenders[key] = h.caller(app, env)

        io = {k: h.COUNTER.per_call(fn, io_calls) for k, fn in contenders.items()}
        h.COUNTER.uninstall()  # the timed runs carry no counting patch or listener
        stats = h.interleave(contenders, batch=batch, rounds=rounds)
        cpu = {k: s.cpu_us for k, s in stats.items()}
        base = {k: stats.get(k) for k in BASELINES}
        for key, label in labels.items():
            if key in skipped:
                rows.append(h.skipped(label, skipped[key]))
                continue
            s = stats[key]
            extra: dict[str, Any] = {"p50_us": round(s.p50_us, 1), "cpu_us": round(cpu[key], 1)}
            if not key.startswith("floor_"):
                i = io[key]
                extra.update(store_rt=i["store_rt"], store_writes=i["store_writes"], net=i["net"])
            rows.append(h.row(label, s, ratios=ratios_of(s, base), extra=extra))

        targets += request_targets(stats, cpu, io, skipped)
    finally:
        portals.close()
        for close in closers:
            with contextlib.suppress(Exception):
                close()
        if not no_redis:
            h.delete_redis_keys(prefix)
        if not no_pg:
            cleanup_pg(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"name": "request", "rows": rows, "targets": targets,
            "note": (f"{batch} calls x {rounds} interleaved rounds per contender; wall-clock medians; "
                     "cpu_us = request-thread CPU; store_rt / store_writes / net per request.")}


def request_targets(stats: dict[str, h.Stats], cpu: dict[str, float], io: dict[str, dict[str, float]],
                    skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Issue #12 item 2: the protected-request ratios, the audit cost, the steady-state I/O."""
    out: list[dict[str, Any]] = []

    def r(a: str, b: str) -> float | None:
        return h.ratio(stats.get(a), stats.get(b))

    def why(*keys: str) -> str:
        return "; ".join(f"{k}: {skipped[k]}" for k in keys if k in skipped)

    out.append(h.target("embedded store, audit on <= 0.90x Flask-Login", r("ccsso_embedded_on", "flask_login"),
                        0.90, why("flask_login") or "wall-clock medians, same run"))
    out.append(h.target("Redis store, audit on <= 1.00x Flask-Session-Redis",
                        r("ccsso_redis_on", "flask_session_redis"), 1.00,
                        why("ccsso_redis_on", "flask_session_redis") or "both do one Redis GET"))
    for sql, title in (("pg", "PostgreSQL"), ("sqlite", "SQLite")):
        out.append(h.target(f"SQL store ({title}), audit on <= 1.5x Redis store",
                            r(f"ccsso_{sql}_on", "ccsso_redis_on"), 1.5,
                            why(f"ccsso_{sql}_on", "ccsso_redis_on") or "wall-clock medians"))
    for store in ("embedded", "redis"):
        off = cpu.get(f"ccsso_{store}_off")
        for audit, title in (("on", "healthy sink"), ("dead", "dead sink")):
            on = cpu.get(f"ccsso_{store}_{audit}")
            value = None if on is None or not off else (on - off) / off * 100
            wall = r(f"ccsso_{store}_{audit}", f"ccsso_{store}_off")
            note = why(f"ccsso_{store}_{audit}") or (
                f"request-thread CPU, % over audit off; wall-clock ratio {wall:.3f}" if wall else "")
            out.append(h.target(f"audit request-path cost, {title}, {store} store (%)", value, 3.0, note))
    bad: list[str] = []
    for key, i in io.items():
        if not key.startswith("ccsso_"):
            continue
        if i["store_writes"] or i["net"]:
            bad.append(f"{key}: writes {i['store_writes']}, outbound {i['net']}")
        if key.endswith("_on"):
            out.append(h.target(f"{key.removeprefix('ccsso_').removesuffix('_on')} store: round trips per request",
                                i["store_rt"], 1.0, ", ".join(f"{k}={v}" for k, v in i.items() if k != "store_rt")))
    worst = max((i["store_writes"] + i["net"] for k, i in io.items() if k.startswith("ccsso_")), default=None)
    out.append(h.target("every ccsso contender: store writes + outbound connections per request", worst, 0.0,
                        "; ".join(bad) or "steady state: no write, no connection"))
    return out


def profile(store: str, calls: int, audit: str = "on") -> str:
    """pyinstrument's call tree of ``calls`` protected requests on one store (the
    Profiles section of benchmarks/README.md): ``--profile embedded|redis|pg|sqlite``."""
    from pyinstrument import Profiler

    h.quiet_logs()
    tmp = tempfile.mkdtemp(prefix="ccsso-bench-profile-")
    prefix = f"benchprof{uuid.uuid4().hex[:8]}:"
    cfg = {"embedded": None, "redis": {"type": "redis", "url": h.REDIS_URL, "keyPrefix": prefix},
           "pg": {"type": "sqlalchemy", "url": h.PG_URL, "keyPrefix": prefix},
           "sqlite": {"type": "sqlalchemy", "url": "sqlite:///{instance}/state.sqlite"}}[store]
    portals = Portals(tmp, prefix)
    try:
        portals.start()
        app = portals.app(store, cfg, audit)
        call = h.caller(app, portals.sign_in(app))
        portals.op.close()
        for _ in range(min(calls, 500)):
            call()
        profiler = Profiler(interval=0.0001)
        profiler.start()
        for _ in range(calls):
            call()
        profiler.stop()
        return str(profiler.output_text(unicode=True, color=False, show_all=False))
    finally:
        portals.close()
        h.delete_redis_keys(prefix)
        if store == "pg":
            cleanup_pg(prefix)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if "--profile" in sys.argv:
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("--profile", choices=["embedded", "redis", "pg", "sqlite"], required=True)
        ap.add_argument("--calls", type=int, default=5000)
        ap.add_argument("--audit", choices=["on", "off", "dead"], default="on")
        args = ap.parse_args()
        print(profile(args.profile, args.calls, args.audit))
    else:
        h.standalone(run)
