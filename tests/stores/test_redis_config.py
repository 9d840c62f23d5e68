"""The Redis store's settings: URL forms (TLS, Sentinel, Cluster), timeouts, the circuit breaker
and TLS files, each checked at start-up with a message naming the key (never a 500 later)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flask_ccsso import ConfigError
from flask_ccsso.config import parse_config, split_redis_url
from tests.support import DATA


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKTA_CLIENT_ID", "0oa-client")
    monkeypatch.setenv("OKTA_CLIENT_SECRET", "s3cret")


def _parse(store: dict[str, Any]) -> Any:
    base = json.loads((DATA / "seed_configs" / "okta.json").read_text())
    return parse_config(dict(base, session={"store": {"type": "redis", **store}})).session.store


def test_url_forms() -> None:
    assert split_redis_url("rediss://:pw@h:6380/2") == ("server", [], "", "rediss://:pw@h:6380/2")
    assert split_redis_url("redis+sentinel://:pw@s1:26379,s2,[::1]:26380/portal/3?socket_timeout=0.5") == (
        "sentinel", [("s1", 26379), ("s2", 26379), ("::1", 26380)], "portal",
        "redis://:pw@localhost/3?socket_timeout=0.5")
    assert split_redis_url("rediss+cluster://u:pw@n1:7000,n2:7001") == (
        "cluster", [("n1", 7000), ("n2", 7001)], "", "rediss://u:pw@localhost/0")
    with pytest.raises(ValueError):
        split_redis_url("redis+cluster://n1:99999")


def test_valid_store_blocks(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    store = _parse({"url": "rediss://127.0.0.1:6380/0", "sslCaCerts": str(ca), "socketTimeout": 0.5,
                    "connectTimeout": 0.25, "breakerFailures": 0, "breakerCooldown": 2})
    assert (store.ssl_ca_certs, store.socket_timeout, store.connect_timeout) == (str(ca), 0.5, 0.25)
    assert (store.breaker_failures, store.breaker_cooldown) == (0, 2.0)
    defaults = _parse({"url": "redis+sentinel://s1:26379,s2:26379/portal"})
    assert (defaults.socket_timeout, defaults.connect_timeout) == (1.0, 1.0)
    assert (defaults.breaker_failures, defaults.breaker_cooldown) == (3, 5.0)
    assert _parse({"url": "redis+cluster://:secret@n1:7000,n2:7000"}).url


@pytest.mark.parametrize(("store", "message"), [
    ({"url": "redis+sentinel://s1:26379"}, r"session.store.url: names no Sentinel service"),
    ({"url": "redis+cluster://n1:7000/1"}, r"session.store.url: .*only database 0"),
    ({"url": "redis+cluster://n1:7000,n2:99999"}, r"session.store.url"),
    ({"url": "redis+sentinel://:hunter2@s1:abc/portal"}, r"session.store.url"),
    ({"url": "redis://h:6379/0", "sslCaCerts": "/etc/hostname"}, r"session.store.sslCaCerts: .*does not use TLS"),
    ({"url": "rediss://h:6379/0", "sslCaCerts": "/nonexistent/ca.pem"}, r"session.store.sslCaCerts: .*not a file"),
    ({"url": "rediss://h:6379/0", "sslCertfile": "/etc/hostname"}, r"session.store.sslKeyfile: .*together"),
    ({"url": "redis://h:6379/0", "breakerFailures": -1}, r"session.store.breakerFailures"),
    ({"url": "redis://h:6379/0", "socketTimeout": 0}, r"session.store.socketTimeout"),
    ({"url": "redis://h:6379/0", "connectTimeout": "NaN"}, r"session.store.connectTimeout"),
    ({"url": "redis://h:6379/0", "breakerCooldown": -5}, r"session.store.breakerCooldown"),
    ({"url": "redis+cluster://n1:7000?socket_timeout=nan"}, r"session.store.url"),
])
def test_bad_store_blocks_name_the_key(store: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _parse(store)
    assert "hunter2" not in str(info.value)
