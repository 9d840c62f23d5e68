"""An IdP that cannot be reached is reported with the URL, what failed and
what to check: on the 503 page and in its JSON (no exception text, no
stack), and fully in the log (URL, the kind of failure, the exception chain).

Every fault is real: a port nobody listens on (refused), a ``.invalid`` host
name (DNS, RFC 2606), a plain-HTTP server spoken to with https and a
self-signed https server (TLS), a socket that accepts and never answers
(timeout). All on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.local_op import LocalOP
from tests.support.oidc import SKILLS, callback, oidc_config, start_login

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
#: what must never reach a page: driver / library internals
INTERNALS = ("Errno", "HTTPConnectionPool", "HTTPSConnectionPool", "Max retries", "Traceback", "urllib3",
             "object at 0x", "SSLError(", "NewConnectionError", "[SSL")


# --------------------------------------------------------------------------- the faults

@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections are refused
    (holding the port means nobody else can start listening there meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    sock.close()


class _Plain(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[ssl.SSLContext | None], int]]:
    """Start an HTTP server on 127.0.0.1 (with TLS when given a context); its port."""
    made: list[ThreadingHTTPServer] = []

    def start(tls: ssl.SSLContext | None = None) -> int:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
        if tls is not None:
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        made.append(httpd)
        return int(httpd.server_address[1])

    yield start
    for httpd in made:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def self_signed(tmp_path: Any) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1 that nobody trusts."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests trusts only the system store here (a leftover REQUESTS_CA_BUNDLE would change the TLS cases)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(autouse=True)
def _fresh_log_limit() -> None:
    """Each test sees its first failure logged at ERROR (repeats within 10 s go to DEBUG)."""
    from flask_ccsso.providers import keys

    getattr(keys, "_last_logged", {}).clear()


def _app(make_app: Any, issuer: str, timeout: float = 5.0) -> Any:
    cfg = {"auth": {"providers": {"idp": {"provider": "oidc", "clientId": "c", "clientSecret": "s",
                                          "issuer": issuer, "timeout": timeout}}},
           "session": {"cookieSecure": False}, "skills": SKILLS}
    return make_app(cfg)


def _assert_reported(app: Any, caplog: pytest.LogCaptureFixture, url: str, kind: str, words: tuple[str, ...],
                     log_words: tuple[str, ...]) -> None:
    """The JSON and the page name the URL and what failed; the log has the URL,
    the kind and the exception's own text."""
    client = app.test_client()
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="flask_ccsso"):
        resp = client.get("/sso/idp/login", headers=JSON)
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["error"] == "idp_unavailable" and body["failure"] == kind
    text = body["error_description"]
    assert url in text, text
    for word in words:
        assert word in text, (word, text)
    assert "Check " in text
    for internal in INTERNALS:
        assert internal not in text, (internal, text)

    page = client.get("/sso/idp/login", headers=HTML)
    assert page.status_code == 503
    html = page.get_data(as_text=True)
    assert url in html and all(w in html for w in words) and "Check " in html
    for internal in INTERNALS:
        assert internal not in html, (internal, html)

    lines = [r.getMessage() for r in caplog.records if r.name == "flask_ccsso" and url in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    line = lines[0]
    assert f"[{kind}]" in line and "Cause:" in line, line
    for word in log_words:
        assert word in line, (word, line)


# --------------------------------------------------------------------------- the discovery document

def test_refused_connection_names_url_and_port(make_app, caplog, closed_port):
    issuer = f"http://127.0.0.1:{closed_port}/idp"
    app = _app(make_app, issuer)
    url = f"{issuer}/.well-known/openid-configuration"
    _assert_reported(app, caplog, url, "refused", ("refused", f"127.0.0.1:{closed_port}", "running and listening"),
                     ("Connection refused",))


def test_unresolvable_host_is_a_dns_failure(make_app, caplog):
    issuer = "https://ccsso-no-such-idp.invalid/oauth2"
    app = _app(make_app, issuer)
    _assert_reported(app, caplog, f"{issuer}/.well-known/openid-configuration", "dns",
                     ("ccsso-no-such-idp.invalid", "could not be resolved (DNS)", "host name"),
                     ("NameResolutionError",))


def test_https_to_a_plain_http_port_is_a_tls_failure(make_app, caplog, serve):
    port = serve(None)
    issuer = f"https://127.0.0.1:{port}/idp"
    app = _app(make_app, issuer)
    _assert_reported(app, caplog, f"{issuer}/.well-known/openid-configuration", "tls",
                     ("TLS handshake", f"127.0.0.1:{port}", "plain http"), ("SSLError",))


def test_self_signed_certificate_is_an_untrusted_tls_failure(make_app, caplog, serve, self_signed):
    port = serve(self_signed)
    issuer = f"https://127.0.0.1:{port}/idp"
    app = _app(make_app, issuer)
    _assert_reported(app, caplog, f"{issuer}/.well-known/openid-configuration", "tls_untrusted",
                     ("certificate", "not trusted", "REQUESTS_CA_BUNDLE"), ("CERTIFICATE_VERIFY_FAILED",))


def test_silent_idp_is_a_timeout(make_app, caplog, silent_port):
    issuer = f"http://127.0.0.1:{silent_port}/idp"
    app = _app(make_app, issuer, timeout=0.3)
    _assert_reported(app, caplog, f"{issuer}/.well-known/openid-configuration", "timeout",
                     ("did not answer within 0.3 s (timeout)",), ("ReadTimeout",))


# --------------------------------------------------------------------------- the token endpoint (same rule)

def test_unreachable_token_endpoint_names_it(make_app, caplog, op: LocalOP, closed_port):
    token_url = f"http://127.0.0.1:{closed_port}/token"
    op.extra_metadata = {"token_endpoint": token_url}
    app = make_app(oidc_config(op))
    client = app.test_client()
    params = op.issue_code(start_login(client))
    with caplog.at_level(logging.ERROR, logger="flask_ccsso"):
        resp = callback(client, params, headers=JSON)
    assert resp.status_code == 503, resp.data
    body = resp.get_json()
    assert body["failure"] == "refused"
    assert token_url in body["error_description"] and "token endpoint" in body["error_description"]
    assert not any(i in body["error_description"] for i in INTERNALS)
    assert any(token_url in r.getMessage() and "Connection refused" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- check-config says the same

def test_check_config_names_what_failed(tmp_path, closed_port):
    from tests.support.cli import make, run

    cfg = {"auth": {"provider": "oidc", "clientId": "c", "issuer": f"http://127.0.0.1:{closed_port}",
                    "redirectUri": "https://portal.example.com/callback", "timeout": 1},
           "session": {"cookieSecure": True}}
    result = run(make(tmp_path, cfg), "check-config")
    assert result.exit_code == 2, result.output
    assert f"the connection to 127.0.0.1:{closed_port} was refused" in result.output
    assert "Check that the identity provider is running" in result.output
    assert "(ConnectionError)" not in result.output


def test_repeats_are_not_logged_at_error_again(make_app, caplog, closed_port):
    """An outage (or anyone starting sign-ins during one) cannot flood the log: one ERROR line per URL
    and kind of failure in 10 s, the repeats at DEBUG; every request still gets the full 503."""
    app = _app(make_app, f"http://127.0.0.1:{closed_port}/idp")
    client = app.test_client()
    with caplog.at_level(logging.DEBUG, logger="flask_ccsso"):
        for _ in range(5):
            resp = client.get("/sso/idp/login", headers=JSON)
            assert resp.status_code == 503 and resp.get_json()["failure"] == "refused"
    lines = [r for r in caplog.records if "cannot reach the identity provider" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.ERROR] + [logging.DEBUG] * 4
