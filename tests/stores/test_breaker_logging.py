"""An outage of the Redis store is logged once, not once per request: while the circuit breaker
is open, the calls it refuses log nothing each; the breaker logs its opening (ERROR), a summary
with the count of refused calls at most once per ``report_interval`` while it stays open
(WARNING), and its closing (WARNING). And the 503 of a refused call says when to come back: the
breaker's cool-down left (``Retry-After``, whole seconds rounded up, at least 1), not a fixed 5.

The stall is real: a private redis-server paused with SIGSTOP (connections accepted, nothing
answered), so the breaker opens on real socket timeouts. A refused connection (a port nothing
listens on) fails at once and never opens the breaker (``test_redis_stall.py``): then there is no
cool-down to tell, and the 503 keeps the default ``Retry-After: 5``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_ccsso.exceptions import StoreUnavailable
from flask_ccsso.stores import RedisStore
from flask_ccsso.stores.breaker import Breaker, BreakerOpen
from tests.stores.servers import RedisProc
from tests.support.oidc import oidc_config
from tests.support.sessions import COOKIE

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    yield proc
    proc.stop()


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("flask_ccsso")]


def _app(make_app: Any, op: Any, server: RedisProc, closers: list[Any], cooldown: float = 30.0) -> Any:
    cfg = oidc_config(op)
    cfg["session"]["store"] = {"type": "redis", "url": server.url, "keyPrefix": f"t{uuid.uuid4().hex[:8]}:",
                               "socketTimeout": 0.3, "connectTimeout": 0.3, "breakerFailures": 1,
                               "breakerCooldown": cooldown}
    app = make_app(cfg)
    closers.append(app.session_interface.close)
    return app


def _client(app: Any) -> Any:
    client = app.test_client()
    client.set_cookie(COOKIE, "s" * 43)  # a session id to look up: every request reads the store
    return client


def test_refused_requests_do_not_each_log_an_error(make_app: Any, op: Any, server: RedisProc, closers: list[Any],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    app = _app(make_app, op, server, closers)
    client = _client(app)
    breaker = app.session_interface.store.breaker
    assert isinstance(breaker, Breaker)
    caplog.set_level(logging.DEBUG, logger="flask_ccsso")
    server.pause()
    try:
        assert client.get("/me", headers=JSON).status_code == 503  # one socket timeout: the breaker opens
        assert breaker.state == "open"
        opened = [r for r in _records(caplog) if "breaker" in r.getMessage()]
        assert [r.levelno for r in opened] == [logging.ERROR], [r.getMessage() for r in _records(caplog)]
        assert server.url.split("//")[1].split("/")[0] in opened[0].getMessage()  # names the store

        caplog.clear()
        for n in range(1, 21):
            resp = client.get("/me", headers=JSON if n % 2 else HTML)
            assert resp.status_code == 503
        assert breaker.rejected == 20
        assert _records(caplog) == [], [r.getMessage() for r in _records(caplog)]
    finally:
        server.resume()


def test_summary_at_most_once_per_interval_then_one_record_when_closed(server: RedisProc,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = RedisStore.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", socket_timeout=0.3,
                                connect_timeout=0.3, breaker_failures=1, breaker_cooldown=300.0)
    store.breaker = Breaker(1, 300.0, clock=clock, report_interval=60.0, name="redis://127.0.0.1 (test)")
    caplog.set_level(logging.DEBUG, logger="flask_ccsso")

    def refused(n: int) -> None:
        for _ in range(n):
            with pytest.raises(StoreUnavailable) as info:
                store.get("k")
            assert isinstance(info.value.__cause__, BreakerOpen)

    store.set("k", "v", 60)
    server.pause()
    try:
        with pytest.raises(StoreUnavailable):
            store.get("k")  # the timeout that opens it
        assert [(r.levelno, "redis://127.0.0.1 (test)" in r.getMessage()) for r in _records(caplog)] \
            == [(logging.ERROR, True)]
        caplog.clear()

        refused(10)
        assert _records(caplog) == []
        clock.now += 59.0
        refused(5)
        assert _records(caplog) == []  # not a minute yet

        clock.now += 2.0
        refused(1)  # the first refusal after the interval reports the ones since the opening
        summary = _records(caplog)
        assert [r.levelno for r in summary] == [logging.WARNING]
        assert "16 calls refused" in summary[0].getMessage()
        caplog.clear()
        refused(7)
        assert _records(caplog) == []

        clock.now += 300.0  # the probe: still stalled, so open again -- the same outage, no new record
        with pytest.raises(StoreUnavailable) as info:
            store.get("k")
        assert not isinstance(info.value.__cause__, BreakerOpen)
        assert store.breaker.state == "open" and _records(caplog) == []
        refused(3)  # the interval is long over: the first of these reports the 7 + 1 since the last summary
        assert [r.getMessage().count("8 calls refused") for r in _records(caplog)] == [1]
        caplog.clear()
    finally:
        server.resume()

    clock.now += 300.0
    assert store.get("k") == "v"  # the probe answered: closed
    closed = _records(caplog)
    assert [r.levelno for r in closed] == [logging.WARNING] and "closed" in closed[0].getMessage()
    assert "26 calls refused" in closed[0].getMessage()
    caplog.clear()
    for _ in range(5):
        assert store.get("k") == "v"
    assert _records(caplog) == []
    store.delete("k")
    store.close()


def test_the_503_carries_the_cool_down_left(make_app: Any, op: Any, server: RedisProc, closers: list[Any]) -> None:
    app = _app(make_app, op, server, closers)
    client = _client(app)
    clock = Clock()
    app.session_interface.store.breaker = Breaker(1, 30.0, clock=clock)  # the configured breaker, on a test clock
    server.pause()
    try:
        assert client.get("/me", headers=JSON).status_code == 503  # opens it at 1000.0 for 30 s
        # ... and at 1030.0 the first request is the probe: it times out, the breaker opens again
        for advance, expected in ((0.0, "30"), (12.5, "18"), (17.2, "1"), (0.3, "30")):
            clock.now += advance
            for headers in (JSON, HTML):
                resp = client.get("/me", headers=headers)
                assert resp.status_code == 503 and resp.headers["Retry-After"] == expected, (advance, headers)
    finally:
        server.resume()


def test_a_refused_connection_keeps_the_default_retry_after(make_app: Any, op: Any, server: RedisProc,
                                                            closers: list[Any]) -> None:
    app = _app(make_app, op, server, closers)
    client = _client(app)
    server.stop()  # nothing listens on the port any more: refused at once, the breaker stays closed
    for headers in (JSON, HTML):
        resp = client.get("/me", headers=headers)
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert app.session_interface.store.breaker.state == "closed"


def test_a_refused_connection_is_logged_once_a_minute_not_per_request(make_app: Any, op: Any, closers: list[Any],
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that refuses connections (stopped, restarting) fails every call at
    once and never opens the breaker: the "unreachable" ERROR is still said once,
    then held back for a minute, and the next one counts what was held back."""
    from flask_ccsso.stores.breaker import ThrottledLog
    from tests.support.sessions import free_port

    cfg = oidc_config(op)
    cfg["session"]["store"] = {"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0",
                               "keyPrefix": f"t{uuid.uuid4().hex[:8]}:"}
    app = make_app(cfg)
    closers.append(app.session_interface.close)
    clock = Clock()
    app.session_interface._unreachable_log = ThrottledLog(logging.getLogger("flask_ccsso"), 60.0, clock)
    client = _client(app)
    caplog.set_level(logging.DEBUG, logger="flask_ccsso")

    def unreachable() -> list[str]:
        return [r.getMessage() for r in _records(caplog) if "unreachable" in r.getMessage()]

    for _ in range(25):
        assert client.get("/me", headers=JSON).status_code == 503
    assert unreachable() == ["flask-ccsso: session store unreachable: StoreUnavailable"]
    assert [r.levelno for r in _records(caplog) if "unreachable" in r.getMessage()] == [logging.ERROR]
    caplog.clear()
    clock.now += 61
    assert client.get("/me", headers=JSON).status_code == 503
    assert unreachable() == [("flask-ccsso: session store unreachable: StoreUnavailable "
                              "(and 24 more like it in the last 60s, not logged)")]
