"""A stalled Redis (SIGSTOP: connections accepted, nothing answered) costs one socket timeout per
call until the circuit breaker opens; then calls fail at once -- no connection attempt, no command
sent -- and a probe after the cool-down closes it again once the server answers (issue #13, item 8).

Every server here is a private redis-server (own port, own directory) that the test pauses and
resumes; nothing waits a fixed time (the breaker's clock is the test's, and the rest polls).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_ccsso.config import StoreSettings
from flask_ccsso.exceptions import StoreUnavailable
from flask_ccsso.stores import RedisStore, open_store
from flask_ccsso.stores.breaker import Breaker, BreakerOpen
from tests.stores.servers import RedisProc

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """Counts what the store's connections do: sockets opened and commands sent."""

    def __init__(self) -> None:
        self.connects = 0
        self.sends = 0


def counting(store: RedisStore) -> Wire:
    """Make every connection the store opens from now on a counted one (before its first command)."""
    wire = Wire()
    pool = store.client.connection_pool
    base = pool.connection_class

    class Counted(base):  # type: ignore[misc, valid-type]
        def _connect(self, *a: Any, **kw: Any) -> Any:  # opens the socket (redis-py 5 to 8)
            wire.connects += 1
            return super()._connect(*a, **kw)

        def send_packed_command(self, *a: Any, **kw: Any) -> Any:
            wire.sends += 1
            return super().send_packed_command(*a, **kw)

    pool.connection_class = Counted
    return wire


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    yield proc
    proc.stop()


def _store(server: RedisProc, clock: Clock, failures: int = 2) -> RedisStore:
    store = RedisStore.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", socket_timeout=0.5,
                                connect_timeout=0.5, breaker_failures=failures, breaker_cooldown=5.0)
    store.breaker = Breaker(failures, 5.0, clock=clock)  # the same breaker, on the test's clock
    return store


@pytest.mark.parametrize("lean", [True, False], ids=["lean-get", "redis-py-path"])
def test_stall_opens_the_breaker_then_calls_fail_without_touching_redis(server: RedisProc, lean: bool) -> None:
    clock = Clock()
    store = _store(server, clock)
    if not lean:  # a subclass of redis.Redis keeps redis-py's own command path
        store.client = type("Sub", (redis.Redis,), {})(connection_pool=store.client.connection_pool)
    wire = counting(store)
    store.set("k", "v", 60)
    assert store.get("k") == "v"
    assert store.breaker is not None and store.breaker.state == "closed"

    server.pause()
    try:
        for n in (1, 2):  # each waits one socket timeout (no retry of a timeout), then 503
            with pytest.raises(StoreUnavailable) as info:
                store.get("k")
            assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
            assert store.breaker.failures == n
        assert store.breaker.state == "open" and store.breaker.trips == 1

        before = (wire.connects, wire.sends)
        for call in (lambda: store.get("k"), lambda: store.set("k", "w", 60), lambda: store.update(
                "k", lambda v: ("w", 60)), store.ping, lambda: store.incr("n", 60)):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert isinstance(info.value.__cause__, BreakerOpen)
            assert info.value.response_headers()["Retry-After"] == "5"  # the cool-down left
        assert (wire.connects, wire.sends) == before  # not a socket opened, not a byte sent
        assert store.breaker.rejected == 5

        clock.now += 5.0  # cool-down over: one probe, still stalled -> open again
        assert store.breaker.state == "half-open"
        with pytest.raises(StoreUnavailable) as info:
            store.get("k")
        assert isinstance(info.value.__cause__, redis.exceptions.TimeoutError)
        assert wire.connects == before[0] + 1 and wire.sends > before[1]  # the probe did reach out
        assert store.breaker.state == "open"
    finally:
        server.resume()

    # answering again: nothing reaches it until the next probe, which closes the breaker
    with pytest.raises(StoreUnavailable):
        store.get("k")
    clock.now += 5.0
    assert store.get("k") == "v"
    assert store.breaker.state == "closed" and store.breaker.failures == 0
    assert store.update("k", lambda v: (v + "!", 60)) and store.get("k") == "v!"
    store.delete("k", "n")
    store.close()


def test_a_refused_connection_does_not_open_the_breaker(server: RedisProc) -> None:
    """Refusals fail at once by themselves: the breaker stays closed, and a restarted server is
    used on the very next call (the outage recovers at once, as before)."""
    store = _store(server, Clock(), failures=1)
    store.set("k", "v", 60)
    server.stop()
    for _ in range(3):
        with pytest.raises(StoreUnavailable) as info:
            store.get("k")
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    assert store.breaker is not None and store.breaker.state == "closed"
    server.start()  # same port, empty
    assert store.get("k") is None
    store.set("k", "v2", 60)
    assert store.get("k") == "v2"
    store.close()


def test_requests_get_503_at_once_while_the_breaker_is_open(server: RedisProc, make_app: Any, op: Any) -> None:
    """Through the app: the session store's breaker opens after its failures; later protected
    requests answer 503 (JSON for API clients) without a command sent; unprotected pages are
    served throughout; after SIGCONT and the cool-down the signed-in session works again."""
    from tests.support.sessions import login, session_config

    cfg = session_config(op, {"type": "redis", "url": server.url, "keyPrefix": f"t{uuid.uuid4().hex[:8]}:",
                              "socketTimeout": 0.5, "connectTimeout": 0.5, "breakerFailures": 2,
                              "breakerCooldown": 5})
    app: Flask = make_app(cfg)
    sessions: RedisStore = app.session_interface.store  # type: ignore[attr-defined]
    assert sessions.breaker is not None and (sessions.breaker.threshold, sessions.breaker.cooldown) == (2, 5.0)
    clock = Clock()
    sessions.breaker = Breaker(2, 5.0, clock=clock)
    wire = counting(sessions)
    client = app.test_client()
    login(client, op)
    assert client.get("/me").status_code == 200

    server.pause()
    try:
        assert client.get("/me").status_code == 503
        assert client.get("/me").status_code == 503
        assert sessions.breaker.state == "open"
        sends = wire.sends
        for _ in range(5):
            resp = client.get("/me", headers={"Accept": "application/json"})
            assert resp.status_code == 503 and resp.get_json()["error"] == "store_unavailable"
            assert client.get("/").status_code == 200
        assert wire.sends == sends
    finally:
        server.resume()
    clock.now += 5.0
    assert client.get("/me").status_code == 200
    app.session_interface.close()  # type: ignore[attr-defined]


def test_store_settings_reach_the_client_and_the_breaker(server: RedisProc, tmp_path: Path) -> None:
    store = open_store(StoreSettings(type="redis", url=server.url, socket_timeout=0.5, connect_timeout=0.75,
                                     breaker_failures=4, breaker_cooldown=7.0), str(tmp_path))
    assert isinstance(store, RedisStore)
    kw = store.client.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (0.5, 0.75)
    assert store.breaker is not None and (store.breaker.threshold, store.breaker.cooldown) == (4, 7.0)
    store.close()
    # a URL's own options win; breakerFailures 0 turns the breaker off
    store = open_store(StoreSettings(type="redis", url=server.url + "?socket_timeout=0.2", breaker_failures=0),
                       str(tmp_path))
    assert store.client.connection_pool.connection_kwargs["socket_timeout"] == 0.2  # type: ignore[attr-defined]
    assert store.breaker is None
    store.close()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = Breaker(1, 5.0, clock=clock)
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5.0
    allowed = []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(allowed) == [False] * 7 + [True]
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
