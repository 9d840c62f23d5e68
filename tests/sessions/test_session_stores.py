"""Session stores: Redis, SQLAlchemy (PostgreSQL, SQLite), the embedded default.

The cookie carries only the session id; the record is JSON and nothing else
(a pickle payload planted in the store is never loaded, on every backend).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_ccsso.sessions import SESSION_KEY
from tests.support.oidc import callback, start_login
from tests.support.sessions import COOKIE, login, session_config, store_block, unique_prefix

pytestmark = pytest.mark.redis

MARKER = "/tmp/ccsso-pickle-ran-" + uuid.uuid4().hex


class Evil:
    """Unpickling this would create MARKER (it must never happen)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {MARKER}",))


PAYLOAD = pickle.dumps({SESSION_KEY: {"identity": {"subject": "mallory", "provider": "op"}, "created": 9e12,
                                      "last_seen": 9e12}, "x": Evil()})


BACKENDS = ["redis", "postgresql", "sqlite", "embedded"]


def _plant(app: Any, kind: str, sid: str) -> None:
    """Write PAYLOAD straight into the backend under ``sid``'s record."""
    store = app.session_interface.store
    key = store.prefix + app.session_interface.store_key(sid)
    if kind == "redis":
        store.client.set(key, PAYLOAD, ex=600)
        return
    # SQL (and the embedded SQLite file): the value column is text; PostgreSQL text holds no NUL
    with store.engine.begin() as conn:
        conn.execute(store.kv.delete().where(store.kv.c.key == key))
        conn.execute(store.kv.insert().values(key=key, value=PAYLOAD.decode("latin-1").replace("\x00", ""),
                                               expires_at=time.time() + 600))


@pytest.mark.postgres
@pytest.mark.parametrize("kind", BACKENDS)
def test_sign_in_and_back_on_every_backend(store_app: Any, op: Any, kind: str) -> None:
    app = store_app(kind)
    client = app.test_client()
    sid = login(client, op)
    assert client.get("/me").get_json()["email"] == "alice@example.com"
    record = app.session_interface.read_sid(sid)
    assert record[SESSION_KEY]["identity"]["subject"] == "u-alice"
    # the cookie is the session id and nothing else: no tokens, no claims
    assert len(sid) == 43 and "." not in sid


@pytest.mark.postgres
@pytest.mark.parametrize("kind", BACKENDS)
def test_pickle_payload_is_never_loaded(store_app: Any, op: Any, kind: str, caplog: Any) -> None:
    app = store_app(kind)
    client = app.test_client()
    sid = login(client, op)
    _plant(app, kind, sid)
    caplog.set_level(logging.WARNING, "flask_ccsso")
    resp = client.get("/me", headers={"Accept": "application/json"})
    assert resp.status_code == 401  # the session came back empty
    assert not os.path.exists(MARKER), "a pickle payload was executed"
    assert app.session_interface.read_sid(sid) is None or SESSION_KEY not in (app.session_interface.read_sid(sid) or {})
    assert any("undecodable" in r.getMessage() for r in caplog.records)


def test_embedded_store_writes_json_files(store_app: Any, op: Any) -> None:
    app = store_app("embedded")
    client = app.test_client()
    sid = login(client, op)
    iface = app.session_interface
    raw = iface.store.get(iface.store_key(sid))  # the SQLite file's row, as stored
    # JSON (never a pickle), holding one sealed record: nothing readable in the store
    assert raw.startswith('{"sealed":"v1.') and "u-alice" not in raw
    assert app.session_interface.read_sid(sid)[SESSION_KEY]["identity"]["subject"] == "u-alice"


def test_cookie_flags_default(store_app: Any, op: Any) -> None:
    app = store_app("redis")
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url))
    cookie = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")][-1]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # the test config switches it off


def test_cookie_secure_off_warns(store_app: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, "flask_ccsso")
    store_app("redis")
    assert any("cookieSecure is false" in r.getMessage() for r in caplog.records)


def test_cookie_secure_and_host_prefix(store_app: Any, op: Any) -> None:
    app = store_app("redis", cookieSecure=True, cookieHostPrefix=True)
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-" + COOKIE
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url), base_url="https://localhost")
    assert resp.status_code == 302
    cookie = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith("__Host-" + COOKIE + "=")][-1]
    assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/" in cookie and "Domain" not in cookie
    me = client.get("/me", base_url="https://localhost")
    assert me.status_code == 200 and me.get_json()["subject"] == "u-alice"


@pytest.mark.postgres
def test_sql_store_never_clashes_with_the_apps_own_flask_sqlalchemy(make_app: Any, op: Any, tmp_path: Any,
                                                                    closers: list[Callable[[], None]]) -> None:
    pfx = unique_prefix()
    db = SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "notes_" + pfx.strip(":")
        id = sa.Column(sa.Integer, primary_key=True)

    app = make_app(session_config(op, store_block("sqlite", tmp_path, pfx)),
                   SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/app.db")
    closers.append(app.session_interface.close)
    db.init_app(app)  # after CCSSO: must not raise "already registered"
    with app.app_context():
        db.create_all()
        names = sa.inspect(db.engine).get_table_names()
        assert Note.__tablename__ in names and "ccsso_kv" not in names  # the session table lives elsewhere
        db.engine.dispose()
    client = app.test_client()
    login(client, op)
    assert client.get("/me").status_code == 200
    # and the other order: the app's db first, then flask-ccsso
    app2 = Flask("other", instance_path=str(tmp_path / "i2"))
    app2.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI="sqlite://", CCSSO=session_config(
        op, store_block("sqlite", tmp_path, unique_prefix())))
    db2 = SQLAlchemy(app2)
    from flask_ccsso import CCSSO

    CCSSO(app2)
    closers.append(app2.session_interface.close)
    with app2.app_context():
        db2.engine.dispose()
    closers.append(app2.extensions["ccsso"].store.close)


def test_redis_client_does_not_use_redis_py_default_retries(store_app: Any) -> None:
    app = store_app("redis")
    conn = app.session_interface.store.client.connection_pool.make_connection()
    assert conn.retry._retries <= 1
    conn.disconnect()
    assert isinstance(app.session_interface.store.client, redis.Redis)
