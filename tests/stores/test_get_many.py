"""``SharedStore.get_many``: several keys in one read, in order, on every backend.

It is what lets a bearer request with SCIM on check all of a person's
deprovision markers (email, subject-as-email, ``provider:subject``) in the
one store read the request path may make; the wire count is in
tests/scim/test_marker_read.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso.stores import MemoryStore, RedisStore, SharedStore, SQLStore
from tests.support.clock import Clock
from tests.support.sessions import PG_URL, REDIS_URL

BACKENDS = ["memory", "sqlite", "postgresql", "redis"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[SharedStore, Clock]]:
    clock = Clock()
    prefix = f"gm{uuid.uuid4().hex[:8]}:"
    s: Any
    if request.param == "memory":
        s = MemoryStore(clock)
    elif request.param == "sqlite":
        s = SQLStore.from_url(f"sqlite:///{tmp_path}/kv.db", clock=clock, key_prefix=prefix)
    elif request.param == "postgresql":
        s = SQLStore.from_url(PG_URL, clock=clock, key_prefix=prefix)
    else:
        s = RedisStore.from_url(REDIS_URL, prefix=prefix)
    yield s, clock
    for key in s.keys(""):
        s.delete(key)
    if hasattr(s, "close"):
        s.close()


def test_values_come_back_in_the_order_asked_with_none_for_absent(store: tuple[SharedStore, Clock]) -> None:
    s, _ = store
    s.set("a", "1", 60)
    s.set("c", "3", 60)
    s.set_add("set", "member", 60)  # a set is not a value
    assert s.get_many(["c", "missing", "a", "a"]) == ["3", None, "1", "1"]
    assert s.get_many([]) == []


# Redis expires keys by its own clock, not the store's: the backends that compare with the clock
@pytest.mark.parametrize("store", ["memory", "sqlite", "postgresql"], indirect=True)
def test_an_expired_key_reads_as_absent(store: tuple[SharedStore, Clock]) -> None:
    s, clock = store
    s.set("short", "x", 5)
    s.set("long", "y", 600)
    clock.advance(10)
    assert s.get_many(["short", "long"]) == [None, "y"]


def _kill_own_connections(app_name: str) -> int:
    """Terminate the server side of this store's connections only (what a restart does to them)."""
    admin = sa.create_engine(PG_URL)
    with admin.connect() as conn:
        n = conn.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE application_name = :n AND pid <> pg_backend_pid()"), {"n": app_name}).scalar()
    admin.dispose()
    return int(n or 0)


def test_postgresql_get_many_survives_a_dropped_connection_as_get_does() -> None:
    """A pooled connection found dead (PostgreSQL restarted, a failover) is retried once on a
    new one: the first bearer request after a restart is answered, not a 503."""
    name = f"getmany{uuid.uuid4().hex[:8]}"
    store = SQLStore.from_url(f"{PG_URL}?application_name={name}", key_prefix=f"{name}:")
    try:
        store.set("a", "1", 60)
        assert store.get_many(["a"]) == ["1"]  # a pooled connection exists now
        assert _kill_own_connections(name) >= 1
        assert store.get_many(["a", "b"]) == ["1", None]
    finally:
        store.delete("a")
        store.close()
