"""``rediss://``: the store talks TLS to a private redis-server that requires client certificates
(certificates made here with ``cryptography``); a server whose certificate another CA signed is
refused, and so is a client without its certificate (issue #13, item 10)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_ccsso.config import StoreSettings
from flask_ccsso.exceptions import StoreUnavailable
from flask_ccsso.stores import RedisStore, open_store
from tests.stores.servers import RedisProc, free_port, tls_files

pytestmark = pytest.mark.redis


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisProc, dict[str, str]]]:
    files = tls_files(tmp_path / "pki")

    def admin(proc: RedisProc) -> Any:
        return redis.Redis(port=proc.tls_port, ssl=True, ssl_ca_certs=files["ca"], ssl_certfile=files["client_cert"],
                           ssl_keyfile=files["client_key"], socket_timeout=2, socket_connect_timeout=2)

    proc = RedisProc(tmp_path, "--tls-cert-file", files["server_cert"], "--tls-key-file", files["server_key"],
                     "--tls-ca-cert-file", files["ca"], "--tls-auth-clients", "yes",
                     tls_port=free_port(), client=admin).start()
    yield proc, files
    proc.stop()


def _settings(proc: RedisProc, **tls: Any) -> StoreSettings:
    return StoreSettings(type="redis", url=f"rediss://127.0.0.1:{proc.tls_port}/0",
                         key_prefix=f"t{uuid.uuid4().hex[:8]}:", **tls)


def test_tls_with_ca_and_client_certificate(tls_server: tuple[RedisProc, dict[str, str]], tmp_path: Path) -> None:
    proc, files = tls_server
    store = open_store(_settings(proc, ssl_ca_certs=files["ca"], ssl_certfile=files["client_cert"],
                                 ssl_keyfile=files["client_key"]), str(tmp_path))
    assert isinstance(store, RedisStore)
    store.set("k", "v", 60)
    assert store.get("k") == "v"  # the request path's read, over TLS
    assert store.update("k", lambda v: (f"{v}2", 60)) and store.get("k") == "v2"
    assert store.add("lock", "x", 60) and not store.add("lock", "x", 60)
    store.close()


def test_a_server_certificate_from_another_ca_is_refused(tls_server: tuple[RedisProc, dict[str, str]],
                                                          tmp_path: Path) -> None:
    proc, files = tls_server
    other = tls_files(tmp_path / "other", name="other")
    store = open_store(_settings(proc, ssl_ca_certs=other["ca"], ssl_certfile=files["client_cert"],
                                 ssl_keyfile=files["client_key"]), str(tmp_path))
    for call in (lambda: store.get("k"), lambda: store.set("k", "v", 60)):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert "certificate verify failed" in str(info.value.__cause__).lower()
    store.close()
    # the right CA but no client certificate: the server refuses the handshake
    store = open_store(_settings(proc, ssl_ca_certs=files["ca"]), str(tmp_path))
    with pytest.raises(StoreUnavailable):
        store.get("k")
    store.close()


def test_plain_redis_to_a_tls_port_is_refused(tls_server: tuple[RedisProc, dict[str, str]], tmp_path: Path) -> None:
    proc, _ = tls_server
    store = open_store(StoreSettings(type="redis", url=f"redis://127.0.0.1:{proc.tls_port}/0", socket_timeout=0.5),
                       str(tmp_path))
    with pytest.raises(StoreUnavailable):
        store.get("k")
    store.close()
