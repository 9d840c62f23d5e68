"""Redis Cluster (``redis+cluster://``): a private 3-master cluster made with ``redis-cli --cluster
create``; every store operation works with keys that hash to slots on different masters (no
cross-slot command, no MULTI across keys), and a sign-in, a protected request, a revocation and
locks work through the app (issue #13, item 10)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from flask_ccsso.stores import RedisStore
from flask_ccsso.stores.base import Batch
from tests.stores.servers import RedisProc, free_port, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three masters, no replicas; yields the store URL."""
    work = tmp_path_factory.mktemp("cluster")
    nodes = [RedisProc(work, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000") for _ in range(3)]
    try:
        for node in nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)

        def ok() -> bool:
            return all(b"cluster_state:ok" in n.admin().execute_command("CLUSTER", "INFO") for n in nodes)

        wait_for(ok, timeout=20, what="cluster_state:ok")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes[:2])
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def store(cluster: str) -> Iterator[RedisStore]:
    s = RedisStore.from_url(cluster, prefix=f"t{uuid.uuid4().hex[:8]}:")
    yield s
    for key in s.keys(""):
        s.delete(key)
    s.close()


def _spread(store: RedisStore, n: int = 3) -> list[str]:
    """``n`` keys whose slots live on ``n`` different masters."""
    client: RedisCluster = store.client
    picked: dict[str, str] = {}
    for i in range(1000):
        key = f"k{i}"
        node = client.get_node_from_key(store.prefix + key).name
        picked.setdefault(node, key)
        if len(picked) == n:
            return list(picked.values())
    raise AssertionError("keys did not spread")


def test_every_operation_with_keys_on_different_masters(store: RedisStore) -> None:
    assert isinstance(store.client, RedisCluster)
    a, b, c = _spread(store)
    store.set(a, "1", 60)
    store.set(b, "2", 60)
    assert (store.get(a), store.get(b)) == ("1", "2")
    assert store.add(c, "3", 60) and not store.add(c, "x", 60)
    assert store.pop(c) == "3" and store.get(c) is None
    assert store.update(a, lambda v: (f"{v}+", 60)) and store.get(a) == "1+"
    assert store.update(c, lambda v: ("new" if v is None else "bad", 60)) and store.get(c) == "new"
    assert not store.update(c, lambda v: None)
    assert store.get_many([b, "absent", a]) == ["2", None, "1+"]  # MGET per slot, in order
    store.delete(a, b, c)  # one call, three slots on three masters
    assert [store.get(k) for k in (a, b, c)] == [None, None, None]

    store.set_add(a, "s1", 60)
    store.set_add(a, "s2", 60)
    store.set_remove(a, "s1")
    assert store.set_members(a) == {"s2"}
    assert store.incr(b, 60) == 1 and store.incr(b, 60) == 2
    store.write_many(Batch().set(c, "batch", 60).set_add(f"{a}:x", "m", 60).delete(b))
    assert store.get(c) == "batch" and store.set_members(f"{a}:x") == {"m"} and store.get(b) is None
    assert sorted(store.keys("")) == sorted([a, f"{a}:x", c])  # SCAN over every master

    with store.lock(a, 30) as held:
        assert held
        with store.lock(a, 30) as again:
            assert not again
    token = store.acquire_lock(b, 30)
    assert token and store.extend_lock(b, token, 60) and not store.extend_lock(b, "other", 60)
    store.release_lock(b, token)
    assert store.acquire_lock(b, 30)


def test_update_on_a_cluster_refuses_a_write_that_lost_the_race(store: RedisStore) -> None:
    """The compare-and-set that replaces WATCH/MULTI on a cluster: a write landing between the
    read and the write makes the update decide again on the new value."""
    (key,) = _spread(store, 1)
    store.set(key, "v1", 60)
    seen: list[str | None] = []

    def decide(value: str | None) -> tuple[str, float]:
        seen.append(value)
        if len(seen) == 1:
            store.client.set(store.prefix + key, "racer")  # another client wins the race
        return (f"{value}+mine", 60)

    assert store.update(key, decide)
    assert seen == ["v1", "racer"] and store.get(key) == "racer+mine"


def test_sessions_sign_in_and_revocation_on_a_cluster(cluster: str, make_app: Any, op: Any) -> None:
    from tests.support.sessions import login, session_config

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    block = {"type": "redis", "url": cluster, "keyPrefix": prefix}
    shared = RedisStore.from_url(cluster, prefix=prefix)
    app = make_app(session_config(op, block), store=shared)
    try:
        clients = {}
        for sub in ("u-alice", "u-bob", "u-carol"):  # about ten keys: records and index sets
            clients[sub] = app.test_client()
            login(clients[sub], op, id_claims={"sub": sub, "email": f"{sub}@example.com"})
            assert clients[sub].get("/me").get_json()["subject"] == sub
        sessions: RedisStore = app.session_interface.store  # type: ignore[attr-defined]
        nodes = {sessions.client.get_node_from_key(sessions.prefix + k).name for k in sessions.keys("")}
        assert len(nodes) >= 2  # a user's record and index entries on different masters (all on one: 1 in 3^9)
        assert app.extensions["ccsso"].revoke_user("op:u-bob") == 1
        assert clients["u-bob"].get("/me", headers={"Accept": "application/json"}).status_code == 401
        assert clients["u-alice"].get("/me").get_json()["subject"] == "u-alice"
        assert clients["u-carol"].get("/me").get_json()["subject"] == "u-carol"
    finally:
        app.session_interface.close()  # type: ignore[attr-defined]
        for key in shared.keys(""):
            shared.delete(key)
        shared.close()
