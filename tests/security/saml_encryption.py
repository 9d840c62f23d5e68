"""Helpers for the encrypted-SAML attack tests: a portal trusting the
project's real pysaml2 IdP (``tests/support/saml_idp.py``), and real XML
encryption by ``xmlsec1 --encrypt`` to the SP's public certificate -- which
is all an attacker has (it is in the SP metadata anyone can GET).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.saml_idp import GROUPS_URI, XMLSEC

ACS = "http://localhost/sso/google/acs"
SP_ENTITY = "https://portal.example.test"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
MAPPING = {
    "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "groups": GROUPS_URI,
}
SKILLS = {"database-migration": {"allowedGroups": ["database-admins"], "requiredScopes": ["migration:write"]}}

#: what pysaml2's IdP and most vendors send: AES-CBC data, RSA-OAEP key transport, EncryptedKey inline
TEMPLATE = (
    f'<xenc:EncryptedData xmlns:xenc="{XENC}" xmlns:ds="{DS}" Type="{XENC}Element">'
    f'<xenc:EncryptionMethod Algorithm="{XENC}aes256-cbc"/>'
    f'<ds:KeyInfo><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="{XENC}rsa-oaep-mgf1p"/>'
    '<xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>'
    '<xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>'
)


def xp(*steps: tuple[str, str]) -> str:
    """An absolute XPath from (namespace, local name) steps, prefix-agnostic."""
    return "".join(f"/*[local-name()='{n}' and namespace-uri()='{ns}']" for ns, n in steps)


def encrypt_node(xml: str, xpath: str, cert_path: str) -> str:
    """Replace the node at ``xpath`` by an EncryptedData for ``cert_path``
    (real xmlsec1 --encrypt, the way pysaml2's IdP encrypts)."""
    with tempfile.TemporaryDirectory() as d:
        data, tmpl = os.path.join(d, "data.xml"), os.path.join(d, "tmpl.xml")
        with open(data, "w") as fh:
            fh.write(xml)
        with open(tmpl, "w") as fh:
            fh.write(TEMPLATE)
        out = subprocess.run([XMLSEC, "--encrypt", "--pubkey-cert-pem", cert_path, "--session-key", "aes-256",
                              "--xml-data", data, "--node-xpath", xpath, tmpl],
                             capture_output=True, timeout=30, check=True)
    return out.stdout.decode("utf-8")


def wrap_and_encrypt_assertion(response_xml: str, cert_path: str) -> str:
    """Move the Response's one Assertion into an EncryptedAssertion, encrypted to ``cert_path``."""
    m = re.search(r"<(\w+:)?Assertion[ >].*</\1Assertion>", response_xml, re.DOTALL)
    assert m, response_xml
    p = m.group(1) or ""
    ns = f' xmlns:{p[:-1]}="{SAML}"' if p else f' xmlns="{SAML}"'
    wrapped = response_xml.replace(m.group(0), f"<{p}EncryptedAssertion{ns}>{m.group(0)}</{p}EncryptedAssertion>")
    return encrypt_node(wrapped, xp((SAMLP, "Response"), (SAML, "EncryptedAssertion"), (SAML, "Assertion")),
                        cert_path)


def authn_request_id(location: str) -> str:
    """The AuthnRequest ID from the redirect (all the attacker needs from GET /login)."""
    import zlib

    q = parse_qs(urlsplit(location).query)
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    m = re.search(r'\sID="([^"]+)"', xml)
    assert m
    return m.group(1)


def provider_block(meta: str, **over: Any) -> dict[str, Any]:
    block = {"provider": "saml", "idpMetadata": meta, "spEntityId": SP_ENTITY, "attributeMapping": dict(MAPPING),
             "scopesFromGroups": {"database-admins": ["migration:write"]}}
    block.update(over)
    return block


def login(client) -> str:
    resp = client.get("/sso/google/login?next=/me")
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def post(client, xml: str, relay: str | None, **kw: Any):
    data = {"SAMLResponse": base64.b64encode(xml.encode("utf-8")).decode("ascii")}
    if relay is not None:
        data["RelayState"] = relay
    return client.post("/sso/google/acs", data=data, **kw)


def relay_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["RelayState"][0]


def count_xmlsec(monkeypatch) -> list[list[str]]:
    """Every xmlsec1 process started: by flask-ccsso (``saml_xmlsec.run``) or by
    pysaml2, and every in-process verification (``["xmlsec-binding", "--verify"]``)."""
    import saml2.sigver

    try:
        from flask_ccsso.providers import saml_xmlsec
    except ImportError:  # 0.1.0 left every xmlsec1 run to pysaml2
        saml_xmlsec = None  # type: ignore[assignment]

    calls: list[list[str]] = []
    real_popen, real_run = saml2.sigver.Popen, getattr(saml_xmlsec, "run", None)

    def counting_popen(args, *a, **kw):
        calls.append(list(args))
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(saml2.sigver, "Popen", counting_popen)
    try:  # in-process verifications (xmlsecBackend binding) count as runs too
        from flask_ccsso.providers import saml_binding
    except ImportError:  # before the binding backend existed
        saml_binding = None  # type: ignore[assignment]
    if saml_binding is not None:
        real_node = saml_binding.verify_node

        def counting_node(ctx, sig):
            calls.append(["xmlsec-binding", "--verify"])
            return real_node(ctx, sig)

        monkeypatch.setattr(saml_binding, "verify_node", counting_node)
    if real_run is not None:
        def counting_run(args, *a, **kw):
            calls.append(list(args))
            return real_run(args, *a, **kw)

        monkeypatch.setattr(saml_xmlsec, "run", counting_run)
    return calls


#END


class Recorder(BaseHTTPRequestHandler):
    """A loopback HTTP server that only counts who called it."""

    hits: list[str]

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"A" * 64
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None
