"""What a protected request costs with flask-ccsso's Redis sessions.

A script, not a test: ``python benchmarks/bench_session.py [-n 5000]``.

Every contender serves one GET of a page that reads the signed-in user, called
through ``app.wsgi_app(environ, start_response)`` directly (no test client, no
HTTP server), in the same process and run:

* bare Flask (no session at all) -- the floor;
* Flask-Session alone, Redis backend, reading one key from the session -- with
  its default ``SESSION_REFRESH_EACH_REQUEST`` (a write per request) and
  without;
* Flask-Login with its default (signed cookie) session, if installed;
* flask-ccsso, Redis store, ``@login_required`` on a signed-in session.

It prints microseconds per request, the ratio to bare Flask and to
Flask-Session, and the Redis round trips per request (counted by a client
subclass; ``PIPELINE`` counts as one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, session

REDIS_URL = "redis://127.0.0.1:6379/0"


class CountingRedis(redis.Redis):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.count += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.count += 1
        return super().pipeline(transaction, shard_hint)


def environ_for(path: str, cookie: str | None) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    headers = {"Cookie": cookie} if cookie else {}
    return EnvironBuilder(path=path, headers=headers).get_environ()


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_request import call


def timeit(app: Flask, env: dict[str, Any], n: int, repeats: int = 5) -> float:
    for _ in range(min(500, n)):
        call(app, env)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            call(app, env)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


# --------------------------------------------------------------------------- contenders

def bare() -> tuple[Flask, dict[str, Any], None]:
    app = Flask("bare")

    @app.get("/me")
    def me() -> str:
        return "alice@example.com"

    return app, environ_for("/me", None), None


def flask_session_alone(prefix: str, refresh_each_request: bool = True) -> tuple[Flask, dict[str, Any], CountingRedis]:
    from flask_session import Session

    client = CountingRedis.from_url(REDIS_URL)
    app = Flask("fs")
    app.config.update(SECRET_KEY="x", SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix + "fs:",
                      SESSION_SERIALIZATION_FORMAT="json", SESSION_REFRESH_EACH_REQUEST=refresh_each_request)
    Session(app)

    @app.get("/login")
    def login() -> str:
        session["user"] = "alice@example.com"
        return "ok"

    @app.get("/me")
    def me() -> str:
        return str(session.get("user"))

    c = app.test_client()
    c.get("/login")
    cookie = c.get_cookie("session")
    assert cookie is not None
    return app, environ_for("/me", f"session={cookie.value}"), client


def flask_login_cookie() -> tuple[Flask, dict[str, Any], None] | None:
    """Flask-Login with its cookie session, signed in the way bench_request.py
    does it (same environ as the timed requests, so session protection does
    not rewrite the cookie on every request)."""
    try:
        import flask_login  # noqa: F401
    except ImportError:
        return None
    from bench_request import flask_login_app

    app, env = flask_login_app()
    return app, env, None


def ccsso(prefix: str) -> tuple[Flask, dict[str, Any], CountingRedis, Callable[[], None]]:
    sys.path.insert(0, ".")
    from flask_ccsso import CCSSO, current_identity, login_required
    from flask_ccsso.stores import RedisStore
    from tests.support.local_op import LocalOP
    from tests.support.oidc import callback, oidc_config, start_login

    op = LocalOP()
    cfg = oidc_config(op)
    cfg["session"]["store"] = {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix}
    app = Flask("ccsso")
    app.config.update(SECRET_KEY="x", CCSSO=cfg)
    store = RedisStore.from_url(REDIS_URL, prefix=prefix)
    CCSSO(app, store=store)

    @app.get("/me")
    @login_required
    def me() -> str:
        return str(current_identity.email)

    c = app.test_client()
    url = start_login(c)
    resp = callback(c, op.issue_code(url))
    assert resp.status_code == 302, resp.data
    cookie = c.get_cookie("ccsso_session")
    assert cookie is not None
    sessions = app.session_interface.store  # type: ignore[attr-defined]
    counting = CountingRedis(connection_pool=sessions.client.connection_pool)
    sessions.client = counting

    def close() -> None:
        op.close()
        store.close()
        app.session_interface.close()

    return app, environ_for("/me", f"ccsso_session={cookie.value}"), counting, close


def _flask_session_rows(prefix: str, n: int, results: dict[str, tuple[float, float | None]]) -> None:
    app, env, client = flask_session_alone(prefix)
    assert call(app, env).startswith("200")
    client.count = 0
    us = timeit(app, env, n)
    results["Flask-Session (Redis)"] = (us, client.count / (n * 5 + min(500, n)))

    app, env, client = flask_session_alone(prefix, refresh_each_request=False)
    assert call(app, env).startswith("200")
    client.count = 0
    us = timeit(app, env, n)
    results["Flask-Session (Redis, no refresh write)"] = (us, client.count / (n * 5 + min(500, n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3000, help="requests per timed run (5 runs, median)")
    args = ap.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("flask_ccsso").setLevel(logging.ERROR)
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    results: dict[str, tuple[float, float | None]] = {}

    app, env, _ = bare()
    assert call(app, env).startswith("200")
    results["bare Flask"] = (timeit(app, env, args.n), None)

    try:  # the baseline: Flask-Session alone (not a dependency of flask-ccsso any more)
        import flask_session  # noqa: F401
    except ImportError:
        print("Flask-Session is not installed: its rows are left out (pip install flask-session)")
    else:
        _flask_session_rows(prefix, args.n, results)

    fl = flask_login_cookie()
    if fl is not None:
        app, env, _ = fl
        assert call(app, env).startswith("200")
        results["Flask-Login (cookie session)"] = (timeit(app, env, args.n), None)

    app, env, client, close = ccsso(prefix)
    assert call(app, env).startswith("200"), call(app, env)
    client.count = 0
    us = timeit(app, env, args.n)
    results["flask-ccsso (Redis, @login_required)"] = (us, client.count / (args.n * 5 + min(500, args.n)))
    close()

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=prefix + "*"))
    if keys:
        r.delete(*keys)
    r.close()

    base = results["bare Flask"][0]
    fs = results.get("Flask-Session (Redis)", (float("nan"), None))[0]
    print(f"{'contender':<40} {'us/req':>8} {'x bare':>7} {'x F-S':>6} {'Redis RT/req':>13}")
    for name, (us, rt) in results.items():
        rts = f"{rt:.2f}" if rt is not None else "-"
        print(f"{name:<40} {us:>8.1f} {us / base:>7.2f} {us / fs:>6.2f} {rts:>13}")


if __name__ == "__main__":
    main()
