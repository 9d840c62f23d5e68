"""Failed sign-in alerts across workers and hosts (issue #15, item 5).

Two Flask apps stand for two workers (or hosts): each has its own store client on one real
backend (Redis at 127.0.0.1:6379 under a key prefix of the test's own, PostgreSQL, the embedded
SQLite file), and each takes half of the failed sign-ins -- real ones: a bearer token the app
refuses (``auth.login_failed``, 401). The threshold holds across both: the alert is raised once,
by the app whose failure crossed it, reaches the audit sinks (a real HTTP collector, a real
SQLite audit table) and fires the signal once. A store that cannot be reached costs the request
nothing: each process counts its own share, a warning is logged once, and no response is a 500.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask

from flask_ccsso import signals
from flask_ccsso.audit import AuditPipeline, parse_logging_block
from flask_ccsso.audit.dispatcher import SharedFailureCounter
from flask_ccsso.audit.sinks.sqlalchemy import audit_table
from flask_ccsso.stores import MemoryStore, RedisStore, SharedStore, SQLStore
from tests.stores.servers import RedisProc, free_port
from tests.support.audit import PG_URL, fast_block, wait_for
from tests.support.audit import make_app as make_signal_app
from tests.support.sessions import REDIS_URL
from tests.support.skills import bearer, skills_config, token_claims

WINDOW = 60
COUNT = 6
FAILED = "cannot be counted in the shared store"


def logging_block(collector: Any, count: int = COUNT) -> dict[str, Any]:
    return {"level": "audit", "events": ["auth.login_failed"], "failureThreshold": {"count": count, "window": WINDOW},
            "destinations": [{"type": "http", "url": collector.url}], "flushInterval": 0.05, "batchSize": 20,
            "retryAttempts": 2, "retryBackoff": 0.01, "maxBackoff": 0.2}


@pytest.fixture
def alerts() -> Iterator[list[tuple[Any, dict[str, Any]]]]:
    """``(sender, kwargs)`` of every ``failure_threshold`` signal sent during the test."""
    got: list[tuple[Any, dict[str, Any]]] = []

    def rec(sender: Any, **kw: Any) -> None:
        got.append((sender, kw))

    signals.failure_threshold.connect(rec)
    yield got
    signals.failure_threshold.disconnect(rec)


@pytest.fixture
def stores(request: pytest.FixtureRequest, tmp_path: Any, prefix: str, clock: Any) -> Iterator[list[SharedStore]]:
    """Two clients of one backend (``request.param``), as two workers or hosts hold them."""
    kind = getattr(request, "param", "redis")
    made: list[SharedStore] = []
    for _ in range(2):
        if kind == "redis":
            made.append(RedisStore.from_url(REDIS_URL, prefix=prefix))
        elif kind == "sqlite":  # the embedded default: one file, any number of processes
            made.append(SQLStore.embedded(str(tmp_path / "state"), clock=clock, key_prefix=prefix))
        else:
            made.append(SQLStore.from_url(PG_URL, clock=clock, key_prefix=prefix))
    yield made
    if kind == "postgresql":
        sql = made[0]
        assert isinstance(sql, SQLStore)
        with sql.engine.begin() as conn:
            conn.execute(sql.kv.delete().where(sql.kv.c.key.startswith(prefix)))
    for store in made:
        store.close()


def refuse(client: Any, token: str, addr: str) -> None:
    """One failed sign-in: a bearer token the app refuses, from ``addr``."""
    resp = client.get("/me", headers={**bearer(token), "Accept": "application/json"},
                      environ_base={"REMOTE_ADDR": addr})
    assert resp.status_code == 401, resp.data


def recorded_alerts(collector: Any) -> list[dict[str, Any]]:
    return [e for e in collector.events() if e["type"] == "auth.failure_threshold"]


def flush(*apps: Flask) -> None:
    for app in apps:
        assert app.extensions["ccsso"].audit.flush(5)


@pytest.mark.redis
@pytest.mark.parametrize("stores", ["redis", "sqlite", "postgresql"], indirect=True)
def test_one_threshold_one_alert_across_two_apps(make_app, op, clock, collector, stores, alerts, prefix):
    apps = [make_app({**skills_config(op), "logging": logging_block(collector)}, store=store) for store in stores]
    clients = [app.test_client() for app in apps]
    token = op.sign(token_claims(op, clock, aud="someone-else"))
    addr = "198.51.100.23"

    for i in range(COUNT - 1):  # each app sees its own half: alone, neither would ever reach COUNT
        refuse(clients[i % 2], token, addr)
    assert alerts == []
    refuse(clients[(COUNT - 1) % 2], token, addr)
    crossing = apps[(COUNT - 1) % 2]
    assert alerts == [(crossing, {"key_type": "address", "key": addr, "count": COUNT, "window": WINDOW})]

    for i in range(2 * COUNT):  # the same window: no second alert, from either app
        refuse(clients[i % 2], token, addr)
    assert len(alerts) == 1

    flush(*apps)
    got = wait_for(lambda: recorded_alerts(collector), what="the alert at the collector")
    assert len(got) == 1
    assert got[0]["outcome"] == "alert" and got[0]["data"] == {"key_type": "address", "key": addr, "count": COUNT,
                                                                  "window": WINDOW}
    logged = [e for e in collector.events() if e["type"] == "auth.login_failed"]
    assert len(logged) == 3 * COUNT  # every failure is still recorded, once
    # the alert follows the failure that crossed the threshold, in the app that crossed it
    assert got[0]["client_ip"] == addr

    # window over (and the one before it): counting starts again, and so may an alert
    clock.advance(2 * WINDOW + 1)
    for i in range(COUNT - 1):
        refuse(clients[i % 2], token, addr)
    assert len(alerts) == 1
    refuse(clients[0], token, addr)
    assert len(alerts) == 2 and alerts[1][0] is apps[0] and alerts[1][1]["count"] == COUNT

    # every key the counter wrote has a lifetime, and names no address
    if isinstance(stores[0], RedisStore):
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + SharedFailureCounter.key_prefix + "*"))
        assert keys and all(0 < client.pttl(k) <= 2 * WINDOW * 1000 for k in keys)
        assert not any(addr.encode() in k for k in keys)
        client.close()
    else:
        written = stores[0].keys(SharedFailureCounter.key_prefix)
        assert written and not any(addr in k for k in written)


@pytest.mark.redis
def test_user_key_alert_reaches_a_sql_sink_once(tmp_path, prefix, alerts):
    """Per user (email, lower-cased), through pipelines given the store explicitly; each app
    writes its own SQLite audit table, and the one alert is in exactly one of them."""
    now = [1_000_000.0]
    apps, pipelines, dbs = [], [], []
    for name in ("a", "b"):
        app = make_signal_app(tmp_path / name, name=f"worker_{name}")
        db = tmp_path / f"audit-{name}.sqlite"
        settings = parse_logging_block(fast_block(
            failureThreshold={"count": 4, "window": WINDOW}, level="audit", events=["auth.login_failed"],
            destinations=[{"type": "sqlalchemy", "url": f"sqlite:///{db}"}]))
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        pipelines.append(AuditPipeline(app, settings, clock=lambda: now[0], spool_dir=str(tmp_path / name / "spool"),
                                       store=store).start())
        apps.append(app)
        dbs.append(db)
    try:
        for i in range(4):
            apps[i % 2].test_client().post("/send/login_failed", json={
                "_identity": False, "provider": "okta", "reason": "invalid_token", "detail": "bad",
                "email": " Eve@Example.com" if i % 2 else "eve@example.com", "subject": None},
                environ_base={"REMOTE_ADDR": f"10.9.0.{i}"})
        assert [(s, kw) for s, kw in alerts] == [
            (apps[1], {"key_type": "user", "key": "eve@example.com", "count": 4, "window": WINDOW})]
        for p in pipelines:
            assert p.flush(5)
    finally:
        for p in pipelines:
            p.close()
            assert p.store is not None
            p.store.close()
    rows = []
    for db in dbs:
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.connect() as conn:
            rows.append([r.type for r in conn.execute(sa.select(audit_table()))])
        engine.dispose()
    assert rows[0].count("auth.login_failed") == 2 and rows[1].count("auth.login_failed") == 2
    assert rows[0].count("auth.failure_threshold") == 0 and rows[1].count("auth.failure_threshold") == 1


def test_a_store_that_is_down_costs_the_request_nothing(make_app, op, clock, collector, alerts, caplog, tmp_path):
    """A Redis nobody answers at: every failed sign-in is still a 401, never a 500; this process
    counts its own share (the alert still comes, once), and one warning says so. When the store
    answers again, counting goes back to it."""
    server = RedisProc(tmp_path)
    store = RedisStore.from_url(server.url, prefix=f"t{uuid.uuid4().hex[:10]}:", breaker_failures=0)
    app = make_app({**skills_config(op), "logging": logging_block(collector, count=3)}, store=store)
    client = app.test_client()
    token = op.sign(token_claims(op, clock, aud="someone-else"))
    counter = app.extensions["ccsso"].audit.failure_counter(app)
    assert isinstance(counter, SharedFailureCounter) and counter.store is store
    counter.retry_after = 0.0  # try the store on every failure: still one warning per outage
    caplog.set_level(logging.INFO, "flask_ccsso.audit")
    try:
        for _ in range(4):
            refuse(client, token, "203.0.113.5")
        assert alerts == [(app, {"key_type": "address", "key": "203.0.113.5", "count": 3, "window": WINDOW})]
        assert [r.levelno for r in caplog.records if FAILED in r.getMessage()] == [logging.WARNING]

        server.start()  # the store answers again: counts go to it (not to the in-process fallback)
        for _ in range(2):
            refuse(client, token, "203.0.113.77")
        assert any("counted in the shared store again" in r.getMessage() for r in caplog.records)
        admin = server.admin()
        try:
            assert len(list(admin.scan_iter(match=store.prefix + SharedFailureCounter.key_prefix + "*"))) == 1
        finally:
            admin.close()
        assert "address:203.0.113.77" not in counter.fallback._hits
        server.stop()  # and down again: a new outage, a new warning
        refuse(client, token, "203.0.113.78")
        assert [r.levelno for r in caplog.records if FAILED in r.getMessage()] == [logging.WARNING] * 2
    finally:
        server.stop()
    flush(app)
    got = wait_for(lambda: recorded_alerts(collector), what="the fallback's alert at the collector")
    assert len(got) == 1 and got[0]["data"]["key"] == "203.0.113.5"


def test_store_errors_back_off(make_app, op, clock, collector, alerts, tmp_path):
    """After a store error the in-process counter stands in for ``retry_after`` seconds: a failed
    sign-in pays for an unreachable store at most that often (here: once in the whole test)."""
    port = free_port()
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="unused:", breaker_failures=0)
    calls = []
    incr = store.incr

    def counted(key: str, ttl: float) -> int:
        calls.append(key)
        return incr(key, ttl)

    store.incr = counted  # type: ignore[method-assign]  # counts calls; the real (refused) call still runs
    app = make_app({**skills_config(op), "logging": logging_block(collector, count=3)}, store=store)
    client = app.test_client()
    token = op.sign(token_claims(op, clock, aud="someone-else"))
    for _ in range(5):
        refuse(client, token, "203.0.113.9")
    assert len(calls) == 1
    assert [kw["count"] for _, kw in alerts] == [3]


def test_a_sign_in_refused_for_the_store_is_counted_in_memory(tmp_path, alerts):
    """A sign-in refused because the store is down (reason ``store_unavailable``) is counted in
    this process only: counting it in the store would only wait on the store again."""
    app = make_signal_app(tmp_path)
    store = MemoryStore()
    settings = parse_logging_block(fast_block(failureThreshold={"count": 2, "window": WINDOW}))
    pipeline = AuditPipeline(app, settings, spool_dir=str(tmp_path / "spool"), store=store).start()
    client = app.test_client()
    try:
        for reason in ("store_unavailable", "store_unavailable", "invalid_token"):
            client.post("/send/login_failed", json={"_identity": False, "provider": "okta", "reason": reason,
                                                    "detail": "x", "email": None, "subject": None},
                        environ_base={"REMOTE_ADDR": "192.0.2.44"})
        assert [kw["count"] for _, kw in alerts] == [2]  # the in-process count of the first two
        assert len(store.keys(SharedFailureCounter.key_prefix)) == 1  # the third, only: its count key
    finally:
        pipeline.close()
