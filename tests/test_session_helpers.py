"""Shared fixtures for the session, refresh and back-channel tests (no tests here).

Every test gets its own key prefix (Redis) / table (SQL), so these tests can run
beside others against the same servers.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
import redis

from flask_ccsso.session import _redis_client
from flask_ccsso.stores import RedisStore
from tests.conftest import callback, oidc_config, start_login

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COOKIE = "ccsso_session"


class CountingRedis(redis.Redis):
    """A redis client that counts the commands (and transactions) it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.commands.append("PIPELINE")
        return super().pipeline(transaction, shard_hint)

    def writes(self) -> list[str]:
        return [c for c in self.commands if c in ("SET", "SETEX", "DEL", "PIPELINE", "EXPIRE", "PEXPIRE")]


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def prefix() -> Iterator[str]:
    p = unique_prefix()
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=p + "*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def closers() -> Iterator[list[Callable[[], None]]]:
    items: list[Callable[[], None]] = []
    yield items
    for close in reversed(items):
        close()


def session_config(op: Any, store: dict[str, Any] | None = None, **session: Any) -> dict[str, Any]:
    cfg = oidc_config(op)
    cfg["session"].update(session)
    if store is not None:
        cfg["session"]["store"] = store
    return cfg


@pytest.fixture
def redis_app(make_app: Any, op: Any, prefix: str, closers: list[Callable[[], None]]) -> Callable[..., Any]:
    """An app on the real Redis (sessions and shared state), under this test's prefix."""

    def factory(url: str = REDIS_URL, **session: Any) -> Any:
        store = RedisStore(_redis_client(url), prefix=prefix)
        app = make_app(session_config(op, {"type": "redis", "url": url, "keyPrefix": prefix}, **session), store=store)
        closers.append(app.session_interface.close)
        closers.append(store.close)
        return app

    return factory


def login(client: Any, op: Any, id_claims: dict[str, Any] | None = None, **issue: Any) -> str:
    """Sign in through the local OP; returns the session id from the cookie.
    ``id_claims`` overrides claims of the ID token."""
    issue.setdefault("scope", "openid profile email migration:write")
    url = start_login(client)
    if id_claims is not None:
        from tests.conftest import authorize_params

        issue["claims"] = op.id_claims(authorize_params(url)["nonce"], **id_claims)
    resp = callback(client, op.issue_code(url, **issue))
    assert resp.status_code == 302, resp.data
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie.value)


def count_writes(app: Any) -> CountingRedis:
    """Swap the session interface's client for a counting one."""
    old = app.session_interface.client
    counting = CountingRedis(connection_pool=old.connection_pool)
    app.session_interface.client = counting
    return counting


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpareRedis:
    """A redis-server of our own on a spare port, to stop and start at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                c = redis.Redis(port=self.port, socket_connect_timeout=0.2)
                c.ping()
                c.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
