"""The store's atomic counter (:meth:`SharedStore.incr`) on every backend: what the shared
failed sign-in counter (issue #15, item 5) and the sign-in rate limit count with.

Each backend is the real one: the memory store, the embedded SQLite file, PostgreSQL at
127.0.0.1:5432 and Redis at 127.0.0.1:6379, every one under a key prefix of this test's own.
Two store objects on one backend stand for two workers; threads hammer one counter at once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from flask_ccsso.stores import MemoryStore, RedisStore, SharedStore, SQLStore
from tests.support.audit import PG_URL, wait_for
from tests.support.sessions import REDIS_URL

BACKENDS = ["memory", "sqlite", "postgresql", "redis"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, Callable[[], SharedStore], Clock]]:
    """``(kind, open a store on the backend, the stores' clock)``; every store opened on one
    backend shares its data (except the memory store, which is one process's by design)."""
    kind = request.param
    clock = Clock()
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    opened: list[SharedStore] = []
    memory = MemoryStore(clock)

    def make() -> SharedStore:
        store: SharedStore
        if kind == "memory":
            return memory
        if kind == "sqlite":
            store = SQLStore.embedded(str(tmp_path / "state"), clock=clock, key_prefix=prefix)
        elif kind == "postgresql":
            store = SQLStore.from_url(PG_URL, clock=clock, key_prefix=prefix)
        else:
            store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        opened.append(store)
        return store

    yield kind, make, clock
    if kind == "postgresql" and opened:
        sql = opened[0]
        assert isinstance(sql, SQLStore)
        with sql.engine.begin() as conn:
            conn.execute(sql.kv.delete().where(sql.kv.c.key.startswith(prefix)))
    if kind == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
    for store in opened:
        store.close()


def test_counts_up_from_one_and_keys_are_separate(backend):
    _, make, _ = backend
    store = make()
    assert [store.incr("count:a", 60) for _ in range(3)] == [1, 2, 3]
    assert store.incr("count:b", 60) == 1
    assert store.get("count:a") == "3"


def test_two_workers_share_one_counter(backend):
    kind, make, _ = backend
    first, second = make(), make()
    assert first.incr("shared", 60) == 1
    assert second.incr("shared", 60) == 2
    assert first.incr("shared", 60) == 3
    assert second.get("shared") == "3"
    if kind != "memory":
        assert first is not second  # two connections, one counter


def test_concurrent_increments_are_never_lost_nor_repeated(backend):
    _, make, _ = backend
    stores = [make(), make()]
    threads, per_thread = 6, 15
    seen: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            start.wait(10)
            got = [stores[i % 2].incr("hot", 60) for _ in range(per_thread)]
            with lock:
                seen.extend(got)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert errors == []
    # every increment got its own number: none lost, none counted twice
    assert sorted(seen) == list(range(1, threads * per_thread + 1))
    assert stores[0].get("hot") == str(threads * per_thread)


def test_the_first_increment_starts_a_fixed_lifetime(backend):
    """Later increments do not extend the counter's life (a steady trickle cannot keep it
    alive forever); once it expires, counting starts again at one."""
    kind, make, clock = backend
    store = make()
    if kind == "redis":
        assert isinstance(store, RedisStore)
        store.incr("fixed", 0.6)
        first_ttl = store.client.pttl(store.prefix + "fixed")
        assert 0 < first_ttl <= 600
        wait_for(lambda: store.client.pttl(store.prefix + "fixed") < first_ttl - 100, timeout=5)
        left = store.client.pttl(store.prefix + "fixed")
        assert store.incr("fixed", 0.6) == 2
        assert 0 < store.client.pttl(store.prefix + "fixed") <= left  # not extended
        wait_for(lambda: store.get("fixed") is None, timeout=5)
        assert store.incr("fixed", 0.6) == 1
        return
    store.incr("fixed", 10)
    clock.now += 6
    assert store.incr("fixed", 10) == 2  # would live to +16 if this extended it
    clock.now += 4.5
    assert store.get("fixed") is None
    assert store.incr("fixed", 10) == 1
    clock.now += 9.9
    assert store.incr("fixed", 10) == 2


@pytest.mark.redis
def test_a_redis_counter_without_a_ttl_gets_one():
    """A counter left without a lifetime (written by an older version, or a PERSIST) gets one
    at the next increment: no counter lives forever. (Redis only: the other backends cannot
    hold a key without an expiry.)"""
    store = RedisStore.from_url(REDIS_URL, prefix=f"t{uuid.uuid4().hex[:10]}:")
    try:
        store.client.set(store.prefix + "forever", "4")
        assert store.incr("forever", 30) == 5
        assert 0 < store.client.pttl(store.prefix + "forever") <= 30_000
    finally:
        store.client.delete(store.prefix + "forever")
        store.close()


def test_the_alert_marker_is_taken_once(backend):
    """The shared failure counter's "alerted" marker: of many workers deciding at once,
    exactly one writes it (``update``), and a later window may take it again."""
    _, make, clock = backend
    stores = [make(), make()]
    now = clock()
    taken: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def decide(last: str | None) -> tuple[str, float] | None:
        return None if last is not None and now - float(last) < 60 else (repr(now), 60)

    def race(i: int) -> None:
        start.wait(10)
        got = stores[i % 2].update("marker", decide)
        with lock:
            taken.append(got)

    workers = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert sorted(taken) == [False] * 5 + [True]
    now += 61  # the window has passed (by the deciding clock): the marker may be taken again
    assert stores[1].update("marker", decide) is True
    assert stores[0].update("marker", decide) is False
