"""Checks that had no test of their own: discovery issuer, at_hash, the slow-drip
deadline on IdP answers, and the cap on candidate keys."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from flask_ccsso import signals
from flask_ccsso.providers.keys import ResponseTooLarge, read_capped
from tests.support.oidc import authorize_params, callback, oidc_config, start_login


def test_discovery_naming_another_issuer_is_refused(make_app, op):
    op.extra_metadata = {"issuer": "https://evil.example.com"}
    failures = []
    signals.login_failed.connect(lambda s, **kw: failures.append(kw), weak=False)
    try:
        app = make_app(oidc_config(op))
        resp = app.test_client().get("/sso/op/login?next=/", headers={"Accept": "application/json"})
    finally:
        signals.login_failed.receivers.clear()
    assert resp.status_code == 503 and resp.get_json()["error"] == "issuer_mismatch"
    assert failures[-1]["reason"] == "issuer_mismatch"


def test_at_hash_mismatch_is_refused(make_app, op):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    claims = op.id_claims(authorize_params(url)["nonce"], at_hash="AAAAAAAAAAAAAAAAAAAAAA")
    resp = callback(client, op.issue_code(url, id_token=op.sign(claims), access_token="at-real"))
    assert resp.status_code == 400
    assert client.get("/me").status_code == 302


def test_matching_at_hash_is_accepted(make_app, op):
    from flask_ccsso.providers.oidc import _half_hash

    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    claims = op.id_claims(authorize_params(url)["nonce"], at_hash=_half_hash("at-real", "RS256"))
    resp = callback(client, op.issue_code(url, id_token=op.sign(claims), access_token="at-real"))
    assert resp.status_code == 302


@pytest.fixture
def dripping_server():
    """An HTTP server that sends its body one byte every 0.2 s, forever."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{")
            try:
                while not stop.is_set():
                    conn.sendall(b" ")
                    time.sleep(0.2)
            except OSError:
                pass
            finally:
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/"
    stop.set()
    srv.close()


def test_a_slow_drip_answer_hits_the_total_deadline(dripping_server):
    resp = requests.get(dripping_server, stream=True, timeout=1)
    started = time.monotonic()
    with pytest.raises(ResponseTooLarge, match="too long"):
        read_capped(resp, timeout=0.5)
    assert time.monotonic() - started < 3


def test_oversized_answer_is_cut_off(dripping_server):
    resp = requests.get(dripping_server, stream=True, timeout=1)
    with pytest.raises(ResponseTooLarge):
        read_capped(resp, timeout=10, limit=3)
