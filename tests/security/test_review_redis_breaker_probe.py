"""A half-open circuit breaker's probe that the lean session read (``RedisStore.get``) cut short
with something other than a timeout or a dropped connection -- a reply that is not RESP (a proxy
or another service on the port: redis-py's ``InvalidResponse``), a worker timeout or a gevent
``Timeout`` raised inside the read -- must still be accounted. It used to leave the probe "under
way" for good: every later call of that process was refused by the breaker (503) although the
server answered again.

The server is a private redis-server; the breaker's clock is the test's, so nothing waits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_ccsso.stores import RedisStore
from flask_ccsso.stores.breaker import Breaker
from tests.stores.servers import RedisProc

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _half_open(store: RedisStore, clock: Clock) -> Breaker:
    breaker = Breaker(1, 5.0, clock=clock)
    store.breaker = breaker
    breaker.failure()  # opened, as after a timeout
    clock.now += 5.0  # cool-down over: the next call is the probe
    assert breaker.state == "half-open"
    return breaker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    yield proc
    proc.stop()


def test_an_interrupted_probe_does_not_leave_the_breaker_refusing_for_good(server: RedisProc) -> None:
    store = RedisStore.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        assert store.client is store._lean_client
        store.set("k", "v", 60)
        assert store.get("k") == "v"
        (conn,) = store._idle
        breaker = _half_open(store, clock := Clock())

        class WorkerTimeout(BaseException):  # gunicorn/gevent raise theirs inside the blocked read
            pass

        real = conn.read_response

        def interrupted(*a: object, **kw: object) -> object:
            conn.read_response = real
            raise WorkerTimeout

        conn.read_response = interrupted
        with pytest.raises(WorkerTimeout):
            store.get("k")  # the probe, cut short
        assert not breaker.probing
        assert store.get("k") == "v"  # the server answers: so does the store
        assert breaker.state == "closed"
        del clock
    finally:
        store.close()


def test_a_probe_whose_reply_cannot_be_decoded_does_not_wedge_the_breaker(server: RedisProc) -> None:
    """A client made with ``decode_responses=True`` (the lean read serves it too) raises
    ``UnicodeDecodeError`` for a value that is not UTF-8: neither a timeout nor a dropped
    connection, and the server did answer."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    store = RedisStore(client, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        assert store.client is store._lean_client
        server.admin().set(store.prefix + "binary", b"\xff\xfe", px=60_000)
        store.set("k", "v", 60)
        breaker = _half_open(store, Clock())
        with pytest.raises(UnicodeDecodeError):
            store.get("binary")  # the probe
        assert not breaker.probing
        assert store.get("k") == "v"
        assert breaker.state == "closed"
    finally:
        store.close()
