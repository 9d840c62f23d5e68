"""The development IdP answers only this machine (issue 10, item 5).

Its old loopback rule looked at the issuer string only, so ``flask run --host
0.0.0.0`` (the normal way inside a container) let anyone on the network sign
in as anyone by sending ``Host: 127.0.0.1``. Now the TCP peer address decides
(``REMOTE_ADDR`` as the WSGI server saw it, before and after any ProxyFix),
never the ``Host`` header; ``CCSSO_DEVIDP_ALLOW_REMOTE=1`` is the only way
in for other machines, and it is logged loudly at start-up. And the example
app no longer hard-codes ``enabled=True`` next to the environment switch.

The example portal runs under a real werkzeug server bound to 0.0.0.0; the
attacker connects through this machine's non-loopback address (so the server
sees a non-loopback peer). Where the machine has only loopback, the peer
address is set through the test client's ``REMOTE_ADDR`` instead.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import re
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from flask_ccsso.devidp import DevClient, DevIdP

#: the explicit switch (``flask_ccsso.devidp.ALLOW_REMOTE_ENV_VAR``), spelled out so this
#: module also runs against code that predates it
ALLOW_REMOTE_ENV_VAR = "CCSSO_DEVIDP_ALLOW_REMOTE"

ENDPOINTS = [
    ("GET", "/devidp/.well-known/openid-configuration"),
    ("GET", "/devidp/jwks"),
    ("GET", "/devidp/authorize"),
    ("POST", "/devidp/authorize"),
    ("POST", "/devidp/token"),
    ("GET", "/devidp/userinfo"),
    ("POST", "/devidp/introspect"),
    ("POST", "/devidp/revoke"),
    ("GET", "/devidp/end_session"),
]


def _lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine that a server can bind, or None."""
    candidates: list[str] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("203.0.113.1", 9))  # no packet is sent: only picks the outgoing interface
            candidates.append(s.getsockname()[0])
    except OSError:
        pass
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False).stdout
        candidates.extend(out.split())
    except (OSError, subprocess.SubprocessError):
        pass
    for addr in candidates:
        if ":" in addr or addr.startswith("127.") or addr == "0.0.0.0":
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((addr, 0))
        except OSError:
            continue
        return addr
    return None


LAN = _lan_address()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Portal:
    app: Flask
    port: int
    base: str

    def send(self, method: str, path: str, *, via: str, headers: dict[str, str] | None = None,
             **kw: Any) -> Any:
        """One request to the running server through address ``via``, claiming the
        portal's own host name in ``Host`` (what an attacker would send)."""
        hdrs = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        return requests.request(method, f"http://{via}:{self.port}{path}", headers=hdrs, allow_redirects=False,
                                timeout=10, **kw)


@pytest.fixture
def start_portal(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Portal]]:
    """The example portal (dev IdP mounted) under a real threaded server on 0.0.0.0."""
    started: list[tuple[Any, Flask]] = []

    def start(*, allow_remote: bool = False, trusted_proxies: int = 0) -> Portal:
        holder: dict[str, Flask] = {}

        def dispatch(environ: Any, start_response: Any) -> Any:
            return holder["app"](environ, start_response)

        server = make_server("0.0.0.0", 0, dispatch, threaded=True)
        base = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
        monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", base)
        monkeypatch.setenv("CCSSO_TRUSTED_PROXIES", str(trusted_proxies))
        monkeypatch.delenv("CCSSO_EXAMPLE_IDP", raising=False)
        if allow_remote:
            monkeypatch.setenv(ALLOW_REMOTE_ENV_VAR, "1")
        else:
            monkeypatch.delenv(ALLOW_REMOTE_ENV_VAR, raising=False)
        from example_app import create_app

        # not TESTING: the example's own Host check is live, as under flask run
        app = create_app({"SECRET_KEY": "test", "INSTANCE_PATH": str(tmp_path / f"instance{len(started)}"),
                          "CCSSO_EXAMPLE_DEVIDP": True})
        holder["app"] = app
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, app))
        return Portal(app, server.server_port, base)

    yield start
    for server, app in started:
        server.shutdown()
        server.server_close()
        pipeline = app.extensions.get("ccsso_audit")
        if pipeline is not None:
            pipeline.close()


def _authorize_query(portal: Portal, challenge: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": "portal", "redirect_uri": f"{portal.base}/sso/dev/callback",
            "scope": "openid profile email", "state": "st", "nonce": "n", "code_challenge": challenge,
            "code_challenge_method": "S256", "prompt": "login"}


# --------------------------------------------------------------------------- over the network

@pytest.mark.skipif(LAN is None, reason="this machine has no non-loopback address (see the test-client variant)")
def test_network_peer_with_loopback_host_header_is_refused(start_portal: Callable[..., Portal]) -> None:
    portal = start_portal()
    assert LAN is not None
    # this machine itself still works (the portal's own back channel goes this way)
    assert portal.send("GET", "/devidp/.well-known/openid-configuration", via="127.0.0.1").status_code == 200
    for method, path in ENDPOINTS:
        resp = portal.send(method, path, via=LAN)
        assert resp.status_code == 403, (method, path, resp.status_code, resp.text[:200])
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "only answers requests from this machine" in resp.text
    # a header naming a loopback client changes nothing: the TCP peer decides
    # (other Host spellings: see the test-client variant below, where no app-level host check comes first)
    for hdrs in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}):
        resp = portal.send("POST", "/devidp/token", via=LAN, headers=hdrs, data={"grant_type": "authorization_code"})
        assert resp.status_code == 403, hdrs


@pytest.mark.skipif(LAN is None, reason="this machine has no non-loopback address")
def test_trusted_proxy_header_cannot_make_a_network_peer_local(start_portal: Callable[..., Portal]) -> None:
    """With CCSSO_TRUSTED_PROXIES=1 the ProxyFix rewrites REMOTE_ADDR from
    X-Forwarded-For; the address the server saw still decides."""
    portal = start_portal(trusted_proxies=1)
    assert LAN is not None
    resp = portal.send("GET", "/devidp/.well-known/openid-configuration", via=LAN,
                       headers={"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": f"127.0.0.1:{portal.port}"})
    assert resp.status_code == 403


def test_local_proxy_relaying_a_network_client_is_refused(start_portal: Callable[..., Portal]) -> None:
    """A reverse proxy on this machine (peer 127.0.0.1) relaying for someone on the network."""
    portal = start_portal()
    for hdrs in ({"X-Forwarded-For": "192.0.2.77"}, {"X-Forwarded-For": "127.0.0.1, 192.0.2.77"},
                 {"Forwarded": 'for="[2001:db8::7]:4711"'}, {"X-Real-IP": "10.9.8.7"}):
        resp = portal.send("GET", "/devidp/.well-known/openid-configuration", via="127.0.0.1", headers=hdrs)
        assert resp.status_code == 403, hdrs


@pytest.mark.skipif(LAN is None, reason="this machine has no non-loopback address")
def test_explicit_switch_opens_it_and_warns(start_portal: Callable[..., Portal],
                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_ccsso.devidp"):
        portal = start_portal(allow_remote=True)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and ALLOW_REMOTE_ENV_VAR in r.getMessage()]
    assert warned and "ANY address" in warned[0].getMessage()
    assert LAN is not None
    # a whole code flow from the network: authorize, sign in, token
    verifier, challenge = _pkce()
    page = portal.send("GET", "/devidp/authorize", via=LAN, params=_authorize_query(portal, challenge))
    assert page.status_code == 200, page.text[:300]
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    signed_in = portal.send("POST", action, via=LAN, headers={"Cookie": cookie},
                            data={"csrf": csrf, "username": "alice"})
    assert signed_in.status_code == 302, signed_in.text[:300]
    code = parse_qs(urlsplit(signed_in.headers["Location"]).query)["code"][0]
    token = portal.send("POST", "/devidp/token", via=LAN, auth=("portal", "dev-secret"),
                        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                              "redirect_uri": f"{portal.base}/sso/dev/callback"})
    assert token.status_code == 200 and "id_token" in token.json()


# --------------------------------------------------------------------------- the peer address, as a class

@pytest.fixture
def devidp_app(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    def make(allow_remote: bool = False) -> Flask:
        monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
        monkeypatch.delenv(ALLOW_REMOTE_ENV_VAR, raising=False)
        app = Flask(__name__, instance_path=str(tmp_path / "instance"))
        extra = {"allow_remote": True} if allow_remote else {}
        DevIdP(app, issuer="http://127.0.0.1:5000/devidp", enabled=True,
               clients=[DevClient("portal", "s3cret", ["http://127.0.0.1:5000/cb"])], **extra)
        return app

    return make


@pytest.mark.parametrize("peer", [
    "10.1.2.3", "192.168.1.5", "172.17.0.1", "0.0.0.0", "2001:db8::1", "fe80::1%eth0", "::ffff:10.0.0.1",
    "::", "", "localhost", "127.0.0.1.example.com", "unix:/run/app.sock",
])
def test_non_loopback_peer_refused_whatever_the_host_header(devidp_app: Callable[..., Flask], peer: str) -> None:
    client = devidp_app().test_client()
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000"):
        for method, path in ENDPOINTS:
            resp = client.open(path, method=method, headers={"Host": host}, environ_base={"REMOTE_ADDR": peer})
            assert resp.status_code == 403, (peer, host, path)
            assert resp.mimetype == "text/plain"


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers_are_served(devidp_app: Callable[..., Flask], peer: str) -> None:
    client = devidp_app().test_client()
    resp = client.get("/devidp/.well-known/openid-configuration", headers={"Host": "127.0.0.1:5000"},
                      environ_base={"REMOTE_ADDR": peer})
    assert resp.status_code == 200


def test_allow_remote_in_code_also_opens_it_and_warns(devidp_app: Callable[..., Flask],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_ccsso.devidp"):
        client = devidp_app(allow_remote=True).test_client()
    assert "allow_remote=True" in caplog.text and "ANY address" in caplog.text
    resp = client.get("/devidp/.well-known/openid-configuration", headers={"Host": "127.0.0.1:5000"},
                      environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 200


# --------------------------------------------------------------------------- the example's code switch

def test_example_does_not_switch_the_dev_idp_on_in_a_production_server(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gunicorn 'example_app:create_app()'`` with a leaked CCSSO_DEVIDP_ENABLED=1:
    the environment alone must not start the development IdP."""
    from example_app import create_app

    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    monkeypatch.delenv("CCSSO_EXAMPLE_IDP", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", "http://127.0.0.1:5000")
    with pytest.raises(RuntimeError, match="enabled=True in code"):
        create_app({"SECRET_KEY": "test", "INSTANCE_PATH": str(tmp_path / "instance")})
