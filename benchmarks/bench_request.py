"""What one protected request costs, against bare Flask and Flask-Login.

A script, not a test: ``python benchmarks/bench_request.py [-n 2000] [-r 7]``.

Every contender serves one GET in the same process and run, called through
``app.wsgi_app(environ, start_response)`` directly (no test client, no HTTP
server) with a prebuilt environ (``EnvironBuilder(...).get_environ()``, copied
per call):

a. bare Flask -- the floor;
b. Flask-Login, ``@login_required``, the user loaded from its signed cookie
   session by a trivial ``user_loader``;
c. flask-ccsso ``@login_required``, the embedded default store;
d. flask-ccsso ``@requires_skill("database-migration")``, embedded store;
e. c and d with the Redis store;
f. an API call with ``Authorization: Bearer <real RS256 JWT>`` against
   ``@requires_skill``; the provider's JWKS was cached during warm-up and the
   identity provider is then taken down (its listening socket closed), so a
   request that went to the network would fail. Shown with the verified-token
   cache hit (the normal case) and with the cache emptied before each call
   (full signature verification every time);
g. audit off / default (``skill.invoked`` not recorded) / recording
   ``skill.invoked`` for d.

Per request it also counts store round trips and store writes (Redis: packed
commands sent on the socket, a pipeline counts as one; embedded: session-file
reads and writes plus SQL statements on the SQLite state store) and outbound
connections / HTTP requests (``socket.connect`` and ``requests`` adapter
sends), which must be 0. The flask-ccsso contenders run with audit off unless
said otherwise, so the rows measure the authentication path itself.

Contenders are timed in interleaved rounds (each one batch per round), so
background load on a shared machine hits them alike; the median batch is
shown. The table goes to stdout only.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis
from flask import Flask
from werkzeug.test import EnvironBuilder

REDIS_URL = "redis://127.0.0.1:6379/0"
SKILL = "database-migration"


# --------------------------------------------------------------------------- counters

class Counters:
    """Process-wide I/O counters, patched in at class level."""

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def reset(self) -> None:
        self.c.clear()

    def install(self) -> None:
        counters = self.c
        _RESP_CMD = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")
        redis_writes = {b"SET", b"SETEX", b"PSETEX", b"DEL", b"UNLINK", b"SADD", b"SREM", b"EXPIRE", b"PEXPIRE",
                        b"EVALSHA", b"EVAL", b"GETDEL", b"EXEC", b"HSET", b"INCR"}

        from redis.connection import AbstractConnection

        orig_send = AbstractConnection.send_packed_command

        def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
            raw = b"".join(command) if isinstance(command, (list, tuple)) else command
            names = {m.upper() for m in _RESP_CMD.findall(raw if isinstance(raw, bytes) else bytes(raw))}
            counters["redis_rt"] += 1
            if names & redis_writes:
                counters["redis_writes"] += 1
            return orig_send(conn, command, check_health)

        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]

        orig_connect = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> Any:
            counters["connects"] += 1
            return orig_connect(sock, address)

        socket.socket.connect = connect  # type: ignore[method-assign]

        from requests.adapters import HTTPAdapter

        orig_adapter_send = HTTPAdapter.send

        def adapter_send(self: Any, request: Any, *a: Any, **kw: Any) -> Any:
            counters["http"] += 1
            return orig_adapter_send(self, request, *a, **kw)

        HTTPAdapter.send = adapter_send  # type: ignore[method-assign]

    def watch_engine(self, engine: Any) -> None:
        import sqlalchemy as sa

        counters = self.c

        @sa.event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            counters["sql"] += 1
            if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
                counters["sql_writes"] += 1


COUNTERS = Counters()


# --------------------------------------------------------------------------- driving

def environ_for(path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return EnvironBuilder(path=path, headers=headers or {}, environ_base={"REMOTE_ADDR": "10.0.0.7"}).get_environ()


def call(app: Flask, env: dict[str, Any]) -> str:
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(s)
        return lambda data: None

    body = app.wsgi_app(dict(env), start_response)
    for _ in body:
        pass
    if hasattr(body, "close"):
        body.close()
    return status[0]


class Row:
    def __init__(self, name: str, fn: Callable[[], Any], n: int) -> None:
        self.name = name
        self.fn = fn
        self.n = n
        self.runs: list[float] = []
        self.io: dict[str, float] = {}

    @property
    def us(self) -> float:
        return statistics.median(self.runs)


def contender(name: str, app: Flask, env: dict[str, Any], n: int, before: Callable[[], None] | None = None) -> Row:
    """Check the request answers 200, count its I/O (untimed), return it for timing."""
    status = call(app, env)
    assert status.startswith("200"), (name, status)

    if before is None:
        def fn() -> str:
            return call(app, env)
    else:
        def fn() -> str:
            before()
            return call(app, env)

    row = Row(name, fn, n)
    for _ in range(min(500, n)):  # warm-up
        fn()
    count = min(n, 1000)
    COUNTERS.reset()
    for _ in range(count):
        fn()
    c = COUNTERS.c
    row.io = {
        "store_rt": (c["redis_rt"] + c["file_reads"] + c["file_writes"] + c["sql"]) / count,
        "store_w": (c["redis_writes"] + c["file_writes"] + c["sql_writes"]) / count,
        "net": (c["connects"] + c["http"]) / count,
    }
    return row


def run_interleaved(rows: list[Row], repeats: int) -> None:
    """Time every contender once per round, round after round: background load
    on a shared machine then hits all of them alike, and the ratios hold."""
    for _ in range(repeats):
        for row in rows:
            fn = row.fn
            t0 = time.perf_counter()
            for _ in range(row.n):
                fn()
            row.runs.append((time.perf_counter() - t0) / row.n * 1e6)


# --------------------------------------------------------------------------- contenders

def bare() -> tuple[Flask, dict[str, Any]]:
    app = Flask("bare")

    @app.get("/me")
    def me() -> str:
        return "alice@example.com"

    return app, environ_for("/me")


def flask_login_app() -> tuple[Flask, dict[str, Any]]:
    from flask_login import LoginManager, UserMixin, current_user, login_required, login_user

    class User(UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    app = Flask("fl")
    app.config.update(SECRET_KEY="x")
    lm = LoginManager(app)
    lm.user_loader(lambda uid: User(uid))

    @app.get("/login")
    def login() -> str:
        login_user(User("alice@example.com"))
        return "ok"

    @app.get("/me")
    @login_required
    def me() -> str:
        return str(current_user.id)

    # sign in with the environ the timed requests use: Flask-Login's session
    # protection compares the address / User-Agent hash, and a mismatch would
    # mark the session non-fresh and rewrite the cookie on every request
    headers: list[tuple[str, str]] = []

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers.extend(hdrs)
        return lambda data: None

    for _ in app.wsgi_app(environ_for("/login"), start_response):
        pass
    cookie = next(v.split(";", 1)[0] for k, v in headers if k == "Set-Cookie" and v.startswith("session="))
    env = environ_for("/me", {"Cookie": cookie})
    headers.clear()
    for _ in app.wsgi_app(dict(env), start_response):
        pass
    assert not any(k == "Set-Cookie" for k, _ in headers), "Flask-Login rewrote its cookie"
    return app, env


def ccsso_app(op: Any, tmp: str, label: str, store: dict[str, Any] | None, audit: dict[str, Any] | None) -> Flask:
    from flask_ccsso import CCSSO, current_identity, login_required, requires_skill
    from tests.support.oidc import oidc_config

    cfg = oidc_config(op)
    if store is not None:
        cfg["session"]["store"] = store
    cfg["logging"] = audit if audit is not None else {"level": "off"}
    app = Flask(f"ccsso_{label}", instance_path=os.path.join(tmp, label))
    app.config.update(SECRET_KEY="x", CCSSO=cfg)
    CCSSO(app)

    @app.get("/me")
    @login_required
    def me() -> str:
        return str(current_identity.email)

    @app.get("/migrations")
    @requires_skill(SKILL)
    def migrations() -> str:
        return "migrations ok"

    # the shared state's and the sessions' own connections (the embedded store: one SQLite file)
    for st in (app.extensions["ccsso"].store, app.session_interface.store):  # type: ignore[attr-defined]
        if getattr(st, "engine", None) is not None:
            COUNTERS.watch_engine(st.engine)
    return app


def sign_in_cookie(app: Flask) -> str:
    from flask_ccsso.testing import CCSSOTestClient

    app.test_client_class = CCSSOTestClient
    c = app.test_client()
    c.sign_in({"subject": "u-alice", "email": "alice@example.com", "name": "Alice Admin",
               "groups": ["database-admins", "senior-developers", "staff"],
               "scopes": ["openid", "profile", "email", "migration:write"], "amr": ["pwd"],
               "acr": "urn:ccsso:loa1", "session_index": "op-sid-1", "claims": {"department": "ops"}})
    name = app.config["SESSION_COOKIE_NAME"]
    cookie = c.get_cookie(name)
    assert cookie is not None
    return f"{name}={cookie.value}"


def close_app(app: Flask) -> None:
    state = app.extensions["ccsso"]
    if state.audit is not None:
        state.audit.close(timeout=2)
    with contextlib.suppress(Exception):  # best effort
        app.session_interface.close()  # type: ignore[attr-defined]
    close = getattr(state.store, "close", None)
    if close is not None:
        close()


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="requests per timed batch")
    ap.add_argument("-r", "--repeats", type=int, default=7, help="interleaved rounds (the median is shown)")
    args = ap.parse_args()
    n = args.n
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("flask_ccsso").setLevel(logging.ERROR)
    sink_log = logging.getLogger("bench.audit.sink")
    sink_log.addHandler(logging.NullHandler())
    sink_log.propagate = False
    sink_log.setLevel(logging.INFO)

    from tests.support.local_op import LocalOP
    from tests.support.skills import access_token

    COUNTERS.install()
    tmp = tempfile.mkdtemp(prefix="ccsso-bench-req-")
    prefix = f"benchreq{uuid.uuid4().hex[:8]}:"
    rows: list[Row] = []
    apps: list[Flask] = []
    op = LocalOP()
    try:
        app, env = bare()
        rows.append(contender("a. bare Flask", app, env, n))
        app, env = flask_login_app()
        rows.append(contender("b. Flask-Login @login_required", app, env, n))

        # build every flask-ccsso app (discovery/JWKS fetched at start-up / warm-up) ...
        emb = ccsso_app(op, tmp, "embedded", None, None)
        red = ccsso_app(op, tmp, "redis", {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix}, None)
        audit_default = ccsso_app(op, tmp, "audit_default", None, {"level": "audit", "destination": "logging"})
        audit_rec = ccsso_app(op, tmp, "audit_rec", None, {
            "level": "audit", "events": ["auth.login", "auth.logout", "skill.invoked", "permission.denied"],
            "destinations": [{"type": "logging", "logger": "bench.audit.sink"}]})
        apps += [emb, red, audit_default, audit_rec]
        cookies = {id(a): sign_in_cookie(a) for a in apps}

        class _Clock:
            now = time.time()

        token = access_token(op, _Clock, scope="migration:write", groups=["database-admins"])
        bearer_env = environ_for("/migrations", {"Authorization": f"Bearer {token}", "Accept": "application/json"})
        assert call(emb, bearer_env).startswith("200")  # warm-up: discovery + JWKS cached now

        # ... then take the identity provider down: nothing below may reach it
        op.close()
        op.server.server_close()
        hits_before = (op.discovery_hits, op.jwks_hits, op.token_hits)

        def env_for(a: Flask, path: str) -> dict[str, Any]:
            return environ_for(path, {"Cookie": cookies[id(a)]})

        rows.append(contender("c. ccsso @login_required (embedded)", emb, env_for(emb, "/me"), n))
        rows.append(contender("d. ccsso @requires_skill (embedded)", emb, env_for(emb, "/migrations"), n))
        rows.append(contender("e. ccsso @login_required (Redis)", red, env_for(red, "/me"), n))
        rows.append(contender("e. ccsso @requires_skill (Redis)", red, env_for(red, "/migrations"), n))
        rows.append(contender("f. ccsso bearer JWT @requires_skill", emb, bearer_env, n))
        auth = emb.extensions["ccsso"].bearer_authenticator
        rows.append(contender("f. ... token cache miss (verify)", emb, bearer_env, max(200, n // 10),
                            before=auth.cache.clear))
        rows.append(contender("g. d + audit default (skill.invoked off)", audit_default,
                            env_for(audit_default, "/migrations"), n))
        rows.append(contender("g. d + audit recording skill.invoked", audit_rec, env_for(audit_rec, "/migrations"), n))
        run_interleaved(rows, args.repeats)
        assert (op.discovery_hits, op.jwks_hits, op.token_hits) == hits_before
    finally:
        for a in apps:
            close_app(a)
        with contextlib.suppress(Exception):
            op.close()
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()
        shutil.rmtree(tmp, ignore_errors=True)

    base = rows[0].us
    fl = rows[1].us
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {args.repeats} interleaved batches "
          f"of {n} requests; I/O per request counted over a separate run; audit off unless stated")
    print(f"{'contender':<44} {'us/req':>8} {'x bare':>7} {'x F-Login':>9} {'store RT':>9} {'writes':>7} {'net':>5}")
    for row in rows:
        io = row.io or {}
        print(f"{row.name:<44} {row.us:>8.1f} {row.us / base:>7.2f} {row.us / fl:>9.2f} "
              f"{io.get('store_rt', 0):>9.3f} {io.get('store_w', 0):>7.3f} {io.get('net', 0):>5.2f}")


if __name__ == "__main__":
    main()
