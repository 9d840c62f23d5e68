"""Sliding expiration with short idle timeouts (issue 10, item 17).

With ``idleTimeout`` at or below ``slidingWriteInterval`` (default 60 s) the
old code never recorded activity: a session used every second still ended at
``idleTimeout``; with ``idleTimeout`` twice the interval it could end 50 %
early. The write interval is now bounded by 10 % of ``idleTimeout``, so a
session idles out at most 10 % early -- and never while it is in use.

Tried as a user would: real time (idle 2 s, a request every half second, for
several idle periods) on the real Redis, and with the injected clock for the
exact bounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import CCSSO, current_identity, login_required
from flask_ccsso.sessions import SESSION_KEY, load
from flask_ccsso.sessions.interface import idle_deadline
from flask_ccsso.stores import RedisStore
from flask_ccsso.testing import CCSSOTestClient
from tests.support.oidc import oidc_config
from tests.support.sessions import REDIS_URL, login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ALICE = {"subject": "u-alice", "email": "alice@example.com", "groups": ["database-admins"]}


def _status(client: Any) -> tuple[int, str | None]:
    resp = client.get("/me", headers=JSON)
    body = resp.get_json(silent=True) or {}
    return resp.status_code, body.get("error")


# --------------------------------------------------------------------------- real time

@pytest.fixture
def realtime_app(op: Any, prefix: str, closers: list[Callable[[], None]]) -> Callable[..., Flask]:
    def factory(**session: Any) -> Flask:
        cfg = oidc_config(op)
        cfg["session"].update({"store": {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix}, **session})
        cfg["logging"] = {"level": "off"}
        app = Flask(f"sliding_{prefix}")
        app.config.update(SECRET_KEY="test-secret", TESTING=True, CCSSO=cfg)
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        CCSSO(app, clock=time.time, store=store)  # the wall clock
        app.test_client_class = CCSSOTestClient
        app.add_url_rule("/me", "me", login_required(lambda: {"subject": current_identity.subject}))
        closers.extend([app.session_interface.close, store.close])
        return app

    return factory


def test_a_session_in_use_outlives_several_short_idle_periods_in_real_time(realtime_app: Callable[..., Flask]) -> None:
    idle = 2.0
    app = realtime_app(idleTimeout=idle, absoluteTimeout=60)  # slidingWriteInterval: the default 60 s
    client = app.test_client(identity=ALICE)
    sid = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    started = time.time()
    pace = threading.Event()  # a user's cadence: one request every half second
    seen = []
    while time.time() - started < 3.5 * idle:
        seen.append(_status(client))
        assert seen[-1] == (200, None), (round(time.time() - started, 2), seen)
        pace.wait(0.5)
    last = time.time()
    assert _status(client) == (200, None)
    # the recorded activity is recent: the deadline is at most 10 % of idleTimeout early
    record = load(app.session_interface.read_sid(sid)[SESSION_KEY])  # type: ignore[attr-defined]
    s = app.extensions["ccsso"].config.session
    assert idle_deadline(record, s) - last >= idle * 0.9 - 0.05


# --------------------------------------------------------------------------- injected clock

def test_activity_every_second_keeps_an_idle_timeout_of_two_seconds(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(idleTimeout=2, absoluteTimeout=3600)
    client = app.test_client()
    login(client, op)
    for _ in range(20):  # 18 s of activity, nine idle periods
        clock.advance(0.9)
        assert _status(client) == (200, None)
    clock.advance(2.01)  # then nothing for longer than idleTimeout
    assert _status(client) == (401, "idle_timeout")


@pytest.mark.parametrize("idle", [2, 120, 3600])
@pytest.mark.parametrize("step_share", [0.05, 0.49, 0.95])
def test_never_more_than_ten_percent_early_never_late(redis_app: Any, op: Any, clock: Any, idle: float,
                                                      step_share: float) -> None:
    """Requests every ``step_share * idle``; then the deadline after the last
    real request lies in [0.9 * idle, idle]."""
    app = redis_app(idleTimeout=idle, absoluteTimeout=idle * 20)
    client = app.test_client()
    sid = login(client, op, refresh_token=None)  # no token refresh in the way: only the idle deadline
    for _ in range(6):
        clock.advance(step_share * idle)
        assert _status(client) == (200, None)
    last = clock.now
    s = app.extensions["ccsso"].config.session
    deadline = idle_deadline(load(app.session_interface.read_sid(sid)[SESSION_KEY]), s)
    assert 0.9 * idle - 1e-6 <= deadline - last <= idle + 1e-6
    clock.advance(deadline - last - 0.01)
    # (a request at 89 % of idle would record activity; look without one)
    assert app.session_interface.read_sid(sid)[SESSION_KEY]["identity"]["subject"] == "u-alice"
    clock.advance(0.02)
    assert _status(client) == (401, "idle_timeout")


def test_the_write_interval_is_bounded_by_the_idle_timeout(redis_app: Any) -> None:
    from flask_ccsso.sessions.interface import sliding_write_interval

    for idle, configured, effective in [(2, 60, 0.2), (120, 60, 12), (3600, 60, 60), (600, 0, 0), (10, 0.5, 0.5)]:
        app = redis_app(idleTimeout=idle, slidingWriteInterval=configured)
        assert sliding_write_interval(app.extensions["ccsso"].config.session) == pytest.approx(effective)


def test_default_idle_timeout_still_writes_at_most_once_a_minute(redis_app: Any, op: Any, clock: Any) -> None:
    """The bound does not add writes where the interval already was small."""
    from tests.support.sessions import count_writes

    app = redis_app()  # idleTimeout 3600, slidingWriteInterval 60
    client = app.test_client()
    login(client, op)
    counting = count_writes(app)
    for _ in range(10):
        clock.advance(5)
        assert _status(client) == (200, None)
    assert len(counting.writes()) == 0  # 50 s: nothing to record yet
    clock.advance(11)
    assert _status(client) == (200, None)
    assert len(counting.writes()) == 1
