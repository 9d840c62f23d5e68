"""The session store goes down and comes back (a Redis of our own, on a spare port)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import SpareRedis, login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


@pytest.fixture
def spare() -> Iterator[SpareRedis]:
    server = SpareRedis()
    server.start()
    yield server
    server.stop()


def test_store_down_fails_closed_and_recovers(redis_app: Any, op: Any, spare: SpareRedis) -> None:
    app = redis_app(url=spare.url)
    client = app.test_client()
    login(client, op)
    assert client.get("/me").status_code == 200

    spare.stop()
    started = time.monotonic()
    resp = client.get("/me")
    assert resp.status_code == 503
    assert b"session store is not reachable" in resp.data and resp.headers["Retry-After"]
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "store_unavailable"
    assert client.get("/migrations").status_code == 503  # never served without the session check
    assert client.get("/sso/op/login?next=/me").status_code == 503  # no sign-in whose state cannot be kept
    assert client.get("/").status_code == 200  # unprotected pages keep working
    assert time.monotonic() - started < 5  # answered at once, no retry storm

    spare.start()  # same port, empty (no persistence): the old session is gone
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401  # recovered by itself: signed out, not 503
    login(client, op)
    assert client.get("/me").get_json()["subject"] == "u-alice"


def test_store_down_while_saving_turns_the_response_into_503(redis_app: Any, op: Any, spare: SpareRedis) -> None:
    app = redis_app(url=spare.url, slidingWriteInterval=0)

    @app.get("/kill")
    def kill() -> str:
        from flask import session

        _ = session.get(SESSION_KEY)
        session["x"] = 1  # this request will need a write
        spare.stop()
        return "ok"

    client = app.test_client()
    sid = login(client, op)
    resp = client.get("/kill")
    assert resp.status_code == 503 and "Set-Cookie" not in resp.headers
    spare.start()
    assert sid  # the browser keeps its old cookie; the store lost everything on restart
    assert client.get("/me").status_code == 302
