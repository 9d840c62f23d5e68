"""IdP metadata is the trust anchor of every SAML sign-in: a metadata URL's
redirects are re-checked at every hop (same host, https -- plain http only
where the configured URL is a loopback http one, as the config allows),
``idpMetadataCertificate`` makes a valid enveloped signature by that
certificate mandatory (verified by xmlsec1), and ``validUntil`` is honoured.
A refused refresh keeps the last good copy and is logged.

Real HTTP(S) servers on 127.0.0.1 serve the documents; metadata is signed
with a real key through pysaml2 / xmlsec1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.saml_idp import DIGEST_SHA256, SIG_RSA_SHA256, SAMLIdP, User, make_keypair

JSON = {"Accept": "application/json"}
SSO = "https://idp.example.test/sso/redirect"
ED = "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor"


class Server:
    """Serves ``body`` at any path, or redirects (``redirect``) there; counts hits."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.body = b""
        self.redirect: str | None = None
        #: paths answered with ``body`` even while ``redirect`` is set
        self.final_paths: set[str] = set()
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if outer.redirect is not None and self.path not in outer.final_paths:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/samlmetadata+xml")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}/metadata"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def build(make_app):
    def factory(url: str, **over: Any):
        block = {"provider": "saml", "idpMetadata": url, "spEntityId": "https://portal.example.test",
                 "attributeMapping": {"email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"}}
        block.update(over)
        app = make_app({"auth": {"providers": {"google": block}}, "session": {"cookieSecure": False},
                        "skills": {"database-migration": {"allowedGroups": ["database-admins"]}}})
        return app, app.test_client(), app.extensions["ccsso"].providers["google"]

    return factory


def starts_login(client: Any) -> int:
    return client.get("/sso/google/login", headers=JSON).status_code


# ------------------------------------------------------------------ redirects

@pytest.mark.parametrize("target", ["http://localhost:{port}/metadata",        # another host name
                                    "http://127.0.0.1:{other}/metadata",       # another port
                                    "file:///etc/passwd", "ftp://127.0.0.1/metadata", "//localhost:{port}/m"])
def test_redirect_to_another_host_or_scheme_is_refused(servers, build, idp, target):
    elsewhere = Server()
    start = Server()
    servers += [elsewhere, start]
    elsewhere.body = idp.metadata_xml().encode()
    start.redirect = target.format(port=elsewhere.port, other=elsewhere.port)
    _app, client, _prov = build(start.url)
    assert starts_login(client) == 503
    assert start.hits == 1 and elsewhere.hits == 0


def test_redirect_on_the_same_host_is_followed(servers, build, idp):
    srv = Server()
    servers.append(srv)
    srv.body = idp.metadata_xml().encode()
    srv.redirect = "/metadata-moved"          # relative: same scheme, host and port
    srv.final_paths = {"/metadata-moved"}
    _app, client, prov = build(srv.url)
    assert starts_login(client) == 302 and prov.idp().entity_id == idp.entity_id
    assert srv.hits == 2


def test_too_many_redirects_are_refused(servers, build, idp):
    loop = Server()
    servers.append(loop)
    loop.redirect = "/metadata"
    _app, client, _prov = build(loop.url)
    assert starts_login(client) == 503
    assert loop.hits == 4   # the first request and three re-checked hops


@pytest.fixture
def tls_cert(tmp_path, monkeypatch) -> tuple[str, str]:
    """A certificate for 127.0.0.1 that requests trusts (REQUESTS_CA_BUNDLE)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert_path)
    return cert_path, key_path


def test_https_metadata_is_not_downgraded_to_http(servers, build, idp, tls_cert):
    plain = Server()
    secure = Server(tls=tls_cert)
    servers += [plain, secure]
    plain.body = secure.body = idp.metadata_xml().encode()
    _app, client, _prov = build(secure.url)
    assert starts_login(client) == 302    # the https URL itself works
    for target in (plain.url.replace(f":{plain.port}", f":{secure.port}"),   # same host and port, http
                   plain.url):                                              # same host, http, another port
        secure.redirect = target
        _app, client, _prov = build(secure.url)
        assert starts_login(client) == 503
    assert plain.hits == 0


# ------------------------------------------------------------------ signed metadata

def signed_metadata(idp: SAMLIdP, signer: Any, xml: str | None = None, ident: str = "md-1") -> str:
    """The IdP's metadata with an enveloped signature by ``signer`` (xmlsec1 via pysaml2)."""
    from saml2 import md
    from saml2.sigver import pre_signature_part, security_context

    ed = md.entity_descriptor_from_string(xml or idp.metadata_xml())
    ed.id = ident
    ed.signature = pre_signature_part(ident, signer.cert_b64, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    secc = security_context(idp._config())
    return str(secc.sign_statement(str(ed), ED, key_file=signer.key_path, node_id=ident))


@pytest.fixture
def federation(tmp_path):
    """The key the metadata publisher signs with (not the IdP's own signing key)."""
    return make_keypair(str(tmp_path / "fed"), "federation")


@pytest.fixture
def signed_setup(servers, build, idp, federation):
    srv = Server()
    servers.append(srv)
    srv.body = signed_metadata(idp, federation).encode()
    app, client, prov = build(srv.url, idpMetadataCertificate=federation.cert_pem)
    return srv, app, client, prov


def test_signed_metadata_is_accepted(signed_setup, idp):
    _srv, _app, client, _prov = signed_setup
    assert starts_login(client) == 302
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    loc = client.get("/sso/google/login?next=/me").headers["Location"]
    assert client.post("/sso/google/acs", data=idp.respond(loc, User())).status_code == 303


@pytest.mark.parametrize("attack", ["unsigned", "tampered", "other_key", "wrapped", "swapped_cert"])
def test_bad_metadata_signature_is_refused(servers, build, idp, federation, tmp_path, attack):
    srv = Server()
    servers.append(srv)
    good = signed_metadata(idp, federation)
    rogue = make_keypair(str(tmp_path / "rogue"), "rogue")
    if attack == "unsigned":
        doc = idp.metadata_xml()
    elif attack == "tampered":
        doc = good.replace(SSO, "https://evil.example/sso/redirect")
        assert doc != good
    elif attack == "other_key":
        doc = signed_metadata(idp, rogue)
    elif attack == "wrapped":
        # an unsigned EntitiesDescriptor around the genuinely signed entity and the attacker's
        evil = SAMLIdP(str(tmp_path / "evil"), entity_id="https://idp.example.test/saml", cn="evil")
        strip = lambda x: x.split("?>", 1)[-1]
        doc = ('<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" ID="outer">'
               + strip(good) + strip(evil.metadata_xml()) + "</md:EntitiesDescriptor>")
    else:
        # the IdP's signing certificate replaced by the attacker's, after signing
        doc = good.replace(idp.keys.cert_b64.replace("\n", ""), rogue.cert_b64.replace("\n", ""))
        assert doc != good
    srv.body = doc.encode()
    _app, client, _prov = build(srv.url, idpMetadataCertificate=federation.cert_pem)
    resp = client.get("/sso/google/login", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"
    assert srv.hits == 1


def _wrap_by_namespaced_id(genuine: str, evil: str) -> str:
    """The attacker's metadata (``evil``, an unsigned EntityDescriptor for the
    trusted IdP's entityID with the attacker's key) as the root, carrying
    ``x:ID="decoy"`` before ``ID=<the genuine document's ID>``, the genuine
    signature as its first child and -- in its Extensions -- the genuinely
    signed document (any entity the publisher signs, here another IdP), with
    its signature moved out. xmlsec1 takes the first ID-named attribute, so for
    it ``#ID`` is the inner, genuinely signed element; the root is what is read."""
    body = genuine.split("?>", 1)[-1]
    sig = re.search(r"<(\w+):Signature\b.*?</\1:Signature>", body, re.DOTALL)
    assert sig is not None
    prefix = sig.group(1)
    ds_ns = re.search(rf'xmlns:{prefix}="([^"]*)"', body).group(1)  # type: ignore[union-attr]
    moved = sig.group(0).replace(f"<{prefix}:Signature", f'<{prefix}:Signature xmlns:{prefix}="{ds_ns}"', 1)
    inner = body.replace(sig.group(0), "")
    ident = re.search(r'\bID="([^"]+)"', inner).group(1)  # type: ignore[union-attr]
    evil_body = evil.split("?>", 1)[-1]
    start = re.match(r"<(\w+):EntityDescriptor\b([^>]*)>", evil_body)
    assert start is not None
    md = start.group(1)
    return (f'<{md}:EntityDescriptor xmlns:x="urn:example:decoy" x:ID="decoy" ID="{ident}"{start.group(2)}>'
            f"{moved}<{md}:Extensions>{inner}</{md}:Extensions>{evil_body[start.end():]}")


def test_signature_wrapping_through_a_namespaced_id_is_refused(servers, build, idp, federation, tmp_path):
    """xmlsec1 resolves ``#ID`` through the first attribute *named* ID, in any
    namespace: with ``x:ID`` first on the root, the Reference lands on a
    wrapped, genuinely signed document and the attacker's root (their signing
    certificate for the trusted entityID) was accepted."""
    other = SAMLIdP(str(tmp_path / "other"), entity_id="https://other.example.test/saml", cn="other")
    evil = SAMLIdP(str(tmp_path / "evil"), entity_id="https://idp.example.test/saml", cn="evil")
    doc = _wrap_by_namespaced_id(signed_metadata(other, federation), evil.metadata_xml())
    srv = Server()
    servers.append(srv)
    srv.body = doc.encode()
    _app, client, prov = build(srv.url, idpMetadataCertificate=federation.cert_pem)
    resp = client.get("/sso/google/login", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"
    # refused by the ID check, before xmlsec1 runs, naming the class
    from flask_ccsso.providers.saml_metadata import MetadataError, verify_metadata_signature

    with pytest.raises(MetadataError, match="foreign namespace"):
        verify_metadata_signature(doc.encode(), federation.cert_pem, prov.xmlsec)


def test_certificate_from_a_file_and_file_metadata_are_verified_too(build, idp, federation, tmp_path):
    path = tmp_path / "idp-metadata.xml"
    path.write_text(signed_metadata(idp, federation))
    _app, client, _prov = build(str(path), idpMetadataCertificate=federation.cert_path)
    assert starts_login(client) == 302
    path.write_text(signed_metadata(idp, federation).replace(SSO, "https://evil.example/sso"))
    from flask_ccsso.config import ConfigError

    with pytest.raises(ConfigError, match="signature"):
        build(str(path), idpMetadataCertificate=federation.cert_path)


def test_refused_refresh_keeps_the_last_good_copy_and_is_logged(signed_setup, idp, federation, clock, caplog):
    srv, _app, client, prov = signed_setup
    assert starts_login(client) == 302
    good = prov.idp()
    srv.body = signed_metadata(idp, federation).replace(SSO, "https://evil.example/sso/redirect").encode()
    clock.advance(3601)
    with caplog.at_level(logging.WARNING, logger="flask_ccsso"):
        assert prov.idp() is good
    assert "keeping the last good copy" in caplog.text and "signature" in caplog.text
    assert starts_login(client) == 302 and prov.idp().sso_redirect == SSO


# ------------------------------------------------------------------ validUntil

def _with_valid_until(xml: str, when: str, *, on: str = "entity") -> str:
    if on == "entity":
        return xml.replace('entityID="', f'validUntil="{when}" entityID="', 1)
    return xml.replace("IDPSSODescriptor ", f'IDPSSODescriptor validUntil="{when}" ', 1)


def _past() -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("on", ["entity", "role"])
def test_expired_metadata_is_refused(servers, build, idp, on):
    srv = Server()
    servers.append(srv)
    srv.body = _with_valid_until(idp.metadata_xml(), _past(), on=on).encode()
    _app, client, _prov = build(srv.url)
    resp = client.get("/sso/google/login", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"


def test_malformed_valid_until_is_unusable_metadata_not_a_400(servers, build, idp):
    srv = Server()
    servers.append(srv)
    srv.body = _with_valid_until(idp.metadata_xml(), "next tuesday").encode()
    _app, client, _prov = build(srv.url)
    resp = client.get("/sso/google/login", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"


def test_expired_refresh_keeps_the_last_good_copy_and_is_logged(servers, build, idp, clock, caplog):
    srv = Server()
    servers.append(srv)
    srv.body = idp.metadata_xml(valid_hours=6).encode()
    _app, client, prov = build(srv.url)
    good = prov.idp()
    srv.body = _with_valid_until(idp.metadata_xml(), _past(), on="role").encode()
    clock.advance(3601)
    with caplog.at_level(logging.WARNING, logger="flask_ccsso"):
        assert prov.idp() is good
    assert "expired" in caplog.text and "keeping the last good copy" in caplog.text
    clock.advance(6 * 3600)   # the good copy's own validUntil passes too
    assert starts_login(client) == 503
