"""Issue #13 item 7: concurrent requests of one session racing to record its
activity stamp (``slidingWriteInterval: 0``: every request records it) on a
healthy Redis. An optimistic-lock conflict (``WATCH``) is not an outage: no
request may answer 503 for it, nothing may log that the store is unreachable,
and the stored stamp ends at the latest activity."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import CCSSO, current_identity, login_required
from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import COOKIE, REDIS_URL, login, session_config

pytestmark = pytest.mark.redis

THREADS = 8
REQUESTS = 40


def _app(op: Any, tmp_path: Any, prefix: str, closers: list[Callable[[], None]]) -> Flask:
    app = Flask("stamp_race", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="test-secret", TESTING=True, CCSSO=session_config(
        op, {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix}, slidingWriteInterval=0))
    CCSSO(app)  # the real clock: every request has its own stamp, as in production
    closers.append(app.session_interface.close)  # type: ignore[attr-defined]

    @app.get("/me")
    @login_required
    def me() -> dict[str, Any]:
        return {"subject": current_identity.subject}

    return app


def test_concurrent_requests_of_one_session_never_503_on_the_activity_stamp(
        op: Any, tmp_path: Any, prefix: str, closers: list[Callable[[], None]], caplog: Any) -> None:
    app = _app(op, tmp_path, prefix, closers)
    sid = login(app.test_client(), op)
    caplog.set_level(logging.INFO, logger="flask_ccsso")
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def browser_tab() -> None:
        client = app.test_client()
        client.set_cookie(COOKIE, sid, domain="localhost")
        start.wait()
        for _ in range(REQUESTS):
            code = client.get("/me", headers={"Accept": "application/json"}).status_code
            with lock:
                statuses[code] += 1

    tabs = [threading.Thread(target=browser_tab) for _ in range(THREADS)]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in tabs)
    assert statuses == {200: THREADS * REQUESTS}, statuses
    store_lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()
                   or "ended meanwhile" in r.getMessage()]
    assert store_lines == []
    # the later stamp was kept: the stored activity is that of the last requests
    before = time.time()
    client = app.test_client()
    client.set_cookie(COOKIE, sid, domain="localhost")
    assert client.get("/me").status_code == 200
    stored = app.session_interface.read_sid(sid)  # type: ignore[attr-defined]
    assert stored is not None
    assert stored[SESSION_KEY]["last_seen"] >= before
