"""Session helpers: server URLs, a per-test key prefix, sign-in, counting and spare Redis servers.

The fixtures built on these (``prefix``, ``closers``, ``redis_app``) live in tests/conftest.py.
Every test gets its own key prefix (Redis) / table (SQL), so tests can run beside others against
the same servers.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import redis

from tests.support.network import free_port
from tests.support.oidc import authorize_params, callback, oidc_config, start_login

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


def delete_prefix(prefix: str, url: str = REDIS_URL) -> None:
    """Delete every key under ``prefix`` in the shared Redis (a test's own keys, afterwards)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def session_config(op: Any, store: dict[str, Any] | None = None, **session: Any) -> dict[str, Any]:
    cfg = oidc_config(op)
    cfg["session"].update(session)
    if store is not None:
        cfg["session"]["store"] = store
    return cfg


def store_block(kind: str, tmp_path: Any, pfx: str) -> dict[str, Any] | None:
    """The ``session.store`` block for a backend of ``BACKENDS`` (None: the embedded default)."""
    if kind == "redis":
        return {"type": "redis", "url": REDIS_URL, "keyPrefix": pfx}
    if kind == "postgresql":
        return {"type": "sqlalchemy", "url": PG_URL, "keyPrefix": pfx}
    if kind == "sqlite":
        return {"type": "sqlalchemy", "url": f"sqlite:///{tmp_path}/sessions.db", "keyPrefix": pfx}
    return None


def login(client: Any, op: Any, id_claims: dict[str, Any] | None = None, **issue: Any) -> str:
    """Sign in through the local OP; returns the session id from the cookie.
    ``id_claims`` overrides claims of the ID token."""
    issue.setdefault("scope", "openid profile email migration:write")
    url = start_login(client)
    if id_claims is not None:
        issue["claims"] = op.id_claims(authorize_params(url)["nonce"], **id_claims)
    resp = callback(client, op.issue_code(url, **issue))
    assert resp.status_code == 302, resp.data
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie.value)


def count_writes(app: Any) -> CountingRedis:
    """Swap the session interface's client for a counting one."""
    store = app.session_interface.store
    counting = CountingRedis(connection_pool=store.client.connection_pool)
    store.client = counting
    return counting


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
