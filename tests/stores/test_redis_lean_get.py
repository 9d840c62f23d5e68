"""The lean session read (``RedisStore.get`` without redis-py's per-command machinery, issue #12)
keeps redis-py's guarantees: a dropped or stale connection is replaced without a 503, a reply is
never handed to the wrong caller (interrupted reads, threads, forked workers), error replies leave
the connection usable, and clients it does not know keep redis-py's own path."""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_ccsso.stores import RedisStore
from tests.stores.servers import RedisProc

pytestmark = pytest.mark.redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path).start()
    yield proc
    proc.stop()


@pytest.fixture
def store(server: RedisProc) -> Iterator[RedisStore]:
    s = RedisStore.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    assert s.client is s._lean_client  # a plain redis.Redis: the lean read
    yield s
    s.close()


def test_a_restarted_server_is_used_at_once(store: RedisStore, server: RedisProc) -> None:
    store.set("k", "v", 60)
    assert store.get("k") == "v" and len(store._idle) == 1
    server.stop()
    server.start()  # same port, empty: the idle connection is dead
    assert store.get("k") is None  # retried once on a new connection, no 503
    store.set("k", "v2", 60)
    assert store.get("k") == "v2"


def test_a_connection_the_server_closed_is_replaced(store: RedisStore, server: RedisProc) -> None:
    store.set("k", "v", 60)
    assert store.get("k") == "v"
    admin = server.admin()
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert store.get("k") == "v"
    admin.close()


def test_an_interrupted_read_never_hands_its_reply_to_the_next_caller(store: RedisStore) -> None:
    """A GET whose reply was not read (a signal, a worker timeout) leaves that reply on the socket:
    the connection must not serve the next GET, or another key's value (another user's session)
    would come back."""
    store.set("alice", "alice-record", 60)
    store.set("bob", "bob-record", 60)
    assert store.get("bob") == "bob-record"
    (conn,) = store._idle

    class Interrupted(BaseException):
        pass

    real = conn.read_response

    def interrupted(*a: object, **kw: object) -> object:
        conn.read_response = real
        raise Interrupted

    conn.read_response = interrupted
    with pytest.raises(Interrupted):
        store.get("alice")  # sent, reply never read
    assert conn not in store._idle
    assert store.get("bob") == "bob-record"


def test_an_error_reply_keeps_the_connection(store: RedisStore) -> None:
    store.set_add("a-set", "m", 60)
    assert store.get("x") is None
    (conn,) = store._idle
    with pytest.raises(redis.exceptions.ResponseError):
        store.get("a-set")  # WRONGTYPE, as redis-py's own path raises it
    assert store._idle == [conn]
    store.set("x", "1", 60)
    assert store.get("x") == "1"


def test_threads_each_get_their_own_replies(store: RedisStore) -> None:
    for i in range(8):
        store.set(f"user{i}", f"record{i}" * 50, 60)
    wrong: list[str] = []

    def reader(i: int) -> None:
        for _ in range(300):
            value = store.get(f"user{i}")
            if value != f"record{i}" * 50:
                wrong.append(f"user{i} got {str(value)[:10]}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert 1 <= len(store._idle) <= 8


def test_a_forked_worker_opens_its_own_connection(store: RedisStore) -> None:
    store.set("k", "parent", 60)
    assert store.get("k") == "parent"
    (conn,) = store._idle
    read, write = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork() beside other tests' threads; this child only reads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no inherited connection, a fresh one works
        try:
            ok = store._idle == [] and store.get("k") == "parent" and len(store._idle) == 1
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 10)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert store._idle == [conn] and store.get("k") == "parent"  # the parent's connection is intact


def test_decoded_replies_and_other_clients(server: RedisProc) -> None:
    store = RedisStore.from_url(server.url + "?decode_responses=True", prefix="d:")
    store.set("k", "é", 60)
    assert store.get("k") == "é" and store.client is store._lean_client
    store.close()
    # clients whose command path the store does not know keep redis-py's own
    sub = type("Traced", (redis.Redis,), {})(port=server.port)
    assert RedisStore(sub, prefix="d:")._lean_client is None
    resp3 = redis.Redis(port=server.port, protocol=3)
    assert RedisStore(resp3, prefix="d:")._lean_client is None
    sub.close()
    resp3.close()
