"""``SharedStore.write_many``: a batch does what its writes do one by one, on every backend,
and a reader never sees half of it (checked against a reader thread on Redis and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso.stores import Batch, MemoryStore, RedisStore, SQLStore
from tests.support.sessions import PG_URL, REDIS_URL, unique_prefix

BACKENDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
            pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS)
def store(request: Any, tmp_path: Any) -> Iterator[Any]:
    prefix = unique_prefix()
    kind = request.param
    if kind == "memory":
        s: Any = MemoryStore()
    elif kind == "sqlite":
        s = SQLStore.from_url(f"sqlite:///{tmp_path}/batch.db", key_prefix=prefix)
    elif kind == "postgresql":
        s = SQLStore.from_url(PG_URL, key_prefix=prefix)
    else:
        s = RedisStore.from_url(REDIS_URL, prefix=prefix)
    yield s
    for kind_prefix in ("a", "s", "gone"):
        for key in s.keys(kind_prefix):
            s.delete(key)
    if kind == "postgresql":
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            for table in ("ccsso_kv", "ccsso_kv_set"):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE key LIKE :p"), {"p": prefix + "%"})
        engine.dispose()
    s.close()


def test_a_batch_does_what_its_writes_do(store: Any) -> None:
    store.set("gone", "x", 60)
    store.set_add("s:old", "h0", 60)
    store.write_many(Batch().delete("gone").set("a:1", "one", 60).set_add("s:1", "h1", 60).set_add("s:1", "h2", 60)
                     .set_remove("s:old", "h0").set_remove("s:1", "h1"))
    assert store.get("gone") is None
    assert store.get("a:1") == "one"
    assert store.set_members("s:1") == {"h2"}
    assert store.set_members("s:old") == set()
    store.write_many(Batch())  # nothing to do: no error, no round trip


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis),
                                  pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_reader_sees_all_of_a_batch_or_none(kind: str) -> None:
    prefix = unique_prefix()
    writer: Any = RedisStore.from_url(REDIS_URL, prefix=prefix) if kind == "redis" else SQLStore.from_url(
        PG_URL, key_prefix=prefix)
    reader: Any = RedisStore.from_url(REDIS_URL, prefix=prefix) if kind == "redis" else SQLStore.from_url(
        PG_URL, key_prefix=prefix)
    torn: list[tuple[str | None, set[str]]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            members = reader.set_members("s:idx")
            for m in members:  # every indexed member has its record
                if reader.get(f"a:{m}") is None and reader.set_members("s:idx") >= {m}:
                    torn.append((m, members))

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(200):
            # the index entry first: written one by one, a reader would see it without its record
            writer.write_many(Batch().set_add("s:idx", str(i), 60).set(f"a:{i}", "r", 60))
    finally:
        done.set()
        t.join(timeout=30)
        for key in writer.keys("a:") + writer.keys("s:"):
            writer.delete(key)
        writer.close()
        reader.close()
    assert torn == []
