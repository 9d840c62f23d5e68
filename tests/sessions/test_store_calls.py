"""Store round trips on the request path (counted, not timed).

A plain protected GET of a signed-in session costs exactly one session-store
read, no write, no shared-store call and no Set-Cookie; the idle deadline is
recorded at most once per ``slidingWriteInterval``. Checked with the embedded
store (a SQLite file; sessions and shared state on their own connections) and with Redis.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import CCSSO, current_identity, login_required, requires_skill
from flask_ccsso.testing import CCSSOTestClient
from tests.support.oidc import oidc_config

REDIS_URL = "redis://127.0.0.1:6379/0"
SIGNED_IN = {"subject": "u-alice", "email": "alice@example.com", "groups": ["database-admins"],
             "scopes": ["openid", "migration:write"]}


class Calls:
    def __init__(self) -> None:
        self.c: Counter[str] = Counter()

    def wrap(self, obj: Any, methods: dict[str, str]) -> None:
        """Count calls of ``obj``'s methods, each under ``methods[name]``."""
        for name, key in methods.items():
            orig = getattr(obj, name)

            def counted(*a: Any, _orig: Any = orig, _key: str = key, **kw: Any) -> Any:
                self.c[_key] += 1
                return _orig(*a, **kw)

            setattr(obj, name, counted)

    def reset(self) -> None:
        self.c.clear()


_SHARED_STORE_METHODS = {m: "shared" for m in ("get", "set", "add", "pop", "delete", "set_add", "set_members",
                                               "set_remove", "keys", "acquire_lock", "release_lock",
                                               "extend_lock")}
_REDIS_WRITES = {"SET", "SETEX", "PSETEX", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "SADD", "SREM", "GETDEL",
                 "EVALSHA", "EVAL"}


def _app(tmp_path: Any, clock: Any, op: Any, store: dict[str, Any] | None) -> Flask:
    cfg = oidc_config(op)
    cfg["logging"] = {"level": "off"}
    if store is not None:
        cfg["session"]["store"] = store
    app = Flask(f"perf_{uuid.uuid4().hex[:6]}", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="test-secret", TESTING=True, CCSSO=cfg)
    CCSSO(app, clock=clock)
    app.test_client_class = CCSSOTestClient

    @app.get("/me")
    @login_required
    def me() -> str:
        return str(current_identity.email)

    @app.get("/migrations")
    @requires_skill("database-migration")
    def migrations() -> str:
        return "ok"

    return app


def _check_request_path(app: Flask, calls: Calls, clock: Any) -> None:
    client = app.test_client(identity=SIGNED_IN)
    cookie_name = app.config["SESSION_COOKIE_NAME"]
    for path in ("/me", "/migrations", "/me"):
        calls.reset()
        resp = client.get(path)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        assert calls.c["session_read"] == 1, (path, dict(calls.c))
        assert calls.c["session_write"] == 0, (path, dict(calls.c))
        assert calls.c["shared"] == 0, (path, dict(calls.c))
        assert not any(h.startswith(cookie_name + "=") for h in resp.headers.getlist("Set-Cookie"))

    # past slidingWriteInterval: the idle deadline is recorded once (a guarded write) ...
    clock.advance(app.extensions["ccsso"].config.session.sliding_write_interval + 1)
    calls.reset()
    assert client.get("/migrations").status_code == 200
    assert calls.c["session_write"] == 1, dict(calls.c)
    assert calls.c["shared"] == 0, dict(calls.c)
    # ... and the next request is back to one read, no write
    calls.reset()
    assert client.get("/migrations").status_code == 200
    assert calls.c["session_read"] == 1 and calls.c["session_write"] == 0, dict(calls.c)


def test_embedded_store_protected_get_is_one_read_no_write(tmp_path: Any, clock: Any, op: Any) -> None:
    app = _app(tmp_path, clock, op, None)
    calls = Calls()
    sessions = app.session_interface.store  # type: ignore[attr-defined]
    calls.wrap(sessions, {"get": "session_read", "set": "session_write", "update": "session_write",
                          "add": "session_write", "delete": "session_write"})
    calls.wrap(app.extensions["ccsso"].store, _SHARED_STORE_METHODS)
    engine = app.extensions["ccsso"].store.engine

    import sqlalchemy as sa

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _sql(*a: Any) -> None:
        calls.c["shared"] += 1

    try:
        _check_request_path(app, calls, clock)
    finally:
        app.extensions["ccsso"].store.close()


def _redis_or_skip() -> Any:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return client


def test_redis_store_protected_get_is_one_read_no_write(tmp_path: Any, clock: Any, op: Any) -> None:
    import redis

    probe = _redis_or_skip()
    prefix = f"perftest{uuid.uuid4().hex[:8]}:"
    app = _app(tmp_path, clock, op, {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix})
    calls = Calls()

    class CountingRedis(redis.Redis):
        def execute_command(self, *args: Any, **options: Any) -> Any:
            name = str(args[0]).upper()
            calls.c["session_write" if name in _REDIS_WRITES else "session_read"] += 1
            return super().execute_command(*args, **options)

        def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
            # the guarded write: WATCH + GET, then MULTI/SET/EXEC -- one write
            calls.c["session_write"] += 1
            return super().pipeline(transaction, shard_hint)

    iface = app.session_interface
    iface.store.client = CountingRedis(connection_pool=iface.store.client.connection_pool)  # type: ignore[attr-defined]
    calls.wrap(app.extensions["ccsso"].store, _SHARED_STORE_METHODS)
    try:
        _check_request_path(app, calls, clock)
    finally:
        keys = list(probe.scan_iter(match=prefix + "*"))
        if keys:
            probe.delete(*keys)
        probe.close()
        iface.close()  # type: ignore[attr-defined]
        app.extensions["ccsso"].store.close()
