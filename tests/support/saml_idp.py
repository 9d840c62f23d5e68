"""A real SAML 2.0 IdP for the tests: pysaml2's own ``saml2.server.Server``.

flask-ccsso does not write this IdP; the harness only configures it, hands it
the AuthnRequest from the portal's redirect, and lets it build (and sign,
with real xmlsec1 signatures, and encrypt) its Response. Attack cases take a
real response and tamper with it -- either after signing (the signature no
longer matches) or before the IdP signs it (:meth:`SAMLIdP.respond` with
``mutate``), which is how a buggy or malicious-but-trusted peer would look.

Keys are generated per test session with ``cryptography``; nothing secret is
committed.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import flask_ccsso.providers.saml  # noqa: F401  (imports pysaml2 quietly)

XMLSEC = "/usr/bin/xmlsec1"
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
EMAIL_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
GROUPS_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"


@dataclass
class KeyPair:
    key_path: str
    cert_path: str
    key_pem: str
    cert_pem: str

    @property
    def cert_b64(self) -> str:
        return "".join(l for l in self.cert_pem.splitlines() if "-----" not in l)


def make_keypair(directory: str, cn: str) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    os.makedirs(directory, exist_ok=True)
    kp = os.path.join(directory, f"{cn}.key")
    cp = os.path.join(directory, f"{cn}.crt")
    with open(kp, "w") as fh:
        fh.write(key_pem)
    with open(cp, "w") as fh:
        fh.write(cert_pem)
    return KeyPair(kp, cp, key_pem, cert_pem)


@dataclass
class User:
    email: str = "alice@example.com"
    name: str = "Alice Example"
    groups: list[str] = field(default_factory=lambda: ["database-admins", "engineering"])
    extra: dict[str, list[str]] = field(default_factory=dict)


class SAMLIdP:
    """pysaml2's IdP, configured for one portal (SP)."""

    def __init__(self, directory: str, *, entity_id: str = "https://idp.example.test/saml",
                 base: str = "https://idp.example.test", keys: KeyPair | None = None,
                 cn: str = "idp") -> None:
        self.directory = directory
        self.entity_id = entity_id
        self.base = base
        self.keys = keys or make_keypair(directory, cn)
        self.sp_metadata: str | None = None
        self._server: Any = None
        #: extra certificates to publish in the metadata (key rollover)
        self.extra_certs: list[str] = []

    # -- configuration -------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
        from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_EMAILADDRESS

        conf: dict[str, Any] = {
            "entityid": self.entity_id,
            "xmlsec_binary": XMLSEC,
            "key_file": self.keys.key_path,
            "cert_file": self.keys.cert_path,
            "accepted_time_diff": 60,
            "service": {"idp": {
                "endpoints": {
                    "single_sign_on_service": [(f"{self.base}/sso/redirect", BINDING_HTTP_REDIRECT),
                                               (f"{self.base}/sso/post", BINDING_HTTP_POST)],
                    "single_logout_service": [(f"{self.base}/slo/redirect", BINDING_HTTP_REDIRECT)],
                },
                "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None,
                                       "name_form": NAME_FORMAT_URI}},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
            }},
        }
        if self.sp_metadata:
            conf["metadata"] = {"inline": [self.sp_metadata]}
        return conf

    def _config(self) -> Any:
        from saml2.config import IdPConfig

        cfg = IdPConfig()
        cfg.load(self.config_dict())
        return cfg

    def metadata_xml(self, *, valid_hours: int | None = None, cache_duration: str | None = None) -> str:
        from saml2.metadata import entity_descriptor

        ed = entity_descriptor(self._config())
        xml = str(ed)
        if self.extra_certs:
            # publish a second signing key (rollover): duplicate the KeyDescriptor
            import re

            kd = re.search(r"<(\w+):KeyDescriptor use=\"signing\">.*?</\1:KeyDescriptor>", xml, re.DOTALL)
            assert kd, xml
            extra = "".join(kd.group(0).replace(self.keys.cert_b64.replace("\n", ""), c) for c in self.extra_certs)
            xml = xml.replace(kd.group(0), kd.group(0) + extra, 1)
        attrs = ""
        if valid_hours is not None:
            until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=valid_hours)
            attrs += f' validUntil="{until.strftime("%Y-%m-%dT%H:%M:%SZ")}"'
        if cache_duration:
            attrs += f' cacheDuration="{cache_duration}"'
        if attrs:
            xml = xml.replace(f'entityID="{self.entity_id}"', f'entityID="{self.entity_id}"{attrs}', 1)
        return xml

    def write_metadata(self, path: str, **kw: Any) -> str:
        with open(path, "w") as fh:
            fh.write(self.metadata_xml(**kw))
        return path

    def trust_sp(self, sp_metadata: str) -> None:
        """Load the portal's SP metadata (from GET /sso/<name>/metadata)."""
        self.sp_metadata = sp_metadata
        self._server = None

    @property
    def server(self) -> Any:
        from saml2.server import Server

        if self._server is None:
            assert self.sp_metadata, "call trust_sp() with the portal's metadata first"
            self._server = Server(config=self._config())
        return self._server

    # -- protocol --------------------------------------------------------------------------
    def parse_login(self, location: str) -> tuple[Any, str | None]:
        """Parse the AuthnRequest the portal redirected to (checks its signature if signed)."""
        from saml2 import BINDING_HTTP_REDIRECT

        q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert location.startswith(f"{self.base}/sso/redirect?"), location
        req = self.server.parse_authn_request(q["SAMLRequest"], BINDING_HTTP_REDIRECT,
                                              relay_state=q.get("RelayState"), sigalg=q.get("SigAlg"),
                                              signature=q.get("Signature"))
        return req.message, q.get("RelayState")

    def response_xml(self, authn_request: Any, user: User, *, sign_assertion: bool = True,
                     sign_response: bool = False, encrypt: bool = False, authn_class: str = PPT,
                     authn_instant: int | None = None, in_response_to: str | None | bool = True,
                     destination: str | None = None, sp_entity_id: str | None = None,
                     ) -> str:
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID

        identity = {EMAIL_URI: [user.email], NAME_URI: [user.name], GROUPS_URI: list(user.groups), **user.extra}
        authn: dict[str, Any] = {"class_ref": authn_class, "authn_auth": self.entity_id}
        if authn_instant is not None:
            authn["authn_instant"] = authn_instant
        irt = authn_request.id if in_response_to is True else (in_response_to or None)
        kwargs: dict[str, Any] = {}
        xml = self.server.create_authn_response(
            identity, irt, destination or authn_request.assertion_consumer_service_url,
            sp_entity_id or authn_request.issuer.text, name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS,
                                                                      text=user.email),
            authn=authn, sign_assertion=sign_assertion, sign_response=sign_response, encrypt_assertion=encrypt,
            encrypt_assertion_self_contained=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256, **kwargs)
        return str(xml)

    def sign(self, xml: str, *, assertion: bool = True, response: bool = False) -> str:
        """Sign an (edited) response with the IdP's real key through pysaml2/xmlsec1."""
        from saml2 import samlp
        from saml2.sigver import pre_signature_part

        resp = samlp.response_from_string(xml)
        sec = self.server.sec
        if assertion:
            a = resp.assertion[0]
            a.signature = pre_signature_part(a.id, sec.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
            xml = str(resp)
            xml = sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", node_id=a.id)
            resp = samlp.response_from_string(xml)
        if response:
            resp.signature = pre_signature_part(resp.id, sec.my_cert, 1, sign_alg=SIG_RSA_SHA256,
                                                digest_alg=DIGEST_SHA256)
            xml = sec.sign_statement(str(resp), "urn:oasis:names:tc:SAML:2.0:protocol:Response", node_id=resp.id)
        return xml

    def respond(self, location: str, user: User | None = None, *, mutate: Callable[[Any], None] | None = None,
                sign_assertion: bool = True, sign_response: bool = False, **kw: Any) -> dict[str, str]:
        """The form the IdP would auto-POST to the ACS (SAMLResponse, RelayState)."""
        req, relay = self.parse_login(location)
        user = user or User()
        session_index = kw.pop("session_index", None)
        if session_index is not None:
            # pysaml2 picks its own SessionIndex; tests choose one to log out by
            inner = mutate

            def mutate(r: Any) -> None:
                r.assertion[0].authn_statement[0].session_index = session_index
                if inner is not None:
                    inner(r)
        if mutate is None:
            xml = self.response_xml(req, user, sign_assertion=sign_assertion, sign_response=sign_response, **kw)
        else:
            from saml2 import samlp

            xml = self.response_xml(req, user, sign_assertion=False, sign_response=False, **kw)
            obj = samlp.response_from_string(xml)
            mutate(obj)
            xml = self.sign(str(obj), assertion=sign_assertion, response=sign_response)
        return form(xml, relay)

    def logout_request(self, sp_slo_url: str, name_id: str, session_index: str | None, *,
                       sign: bool = True) -> str:
        """An IdP-initiated LogoutRequest over HTTP-Redirect (URL to GET at the SP)."""
        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID

        _req_id, req = self.server.create_logout_request(
            sp_slo_url, self.entity_id, name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
            session_indexes=[session_index] if session_index else None, sign=False)
        info = self.server.apply_binding(BINDING_HTTP_REDIRECT, str(req), sp_slo_url, "idp-relay",
                                         sign=sign, sigalg=SIG_RSA_SHA256 if sign else None)
        return str(dict(info["headers"])["Location"])

    def parse_logout_request(self, location: str) -> Any:
        q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        xml = zlib.decompress(base64.b64decode(q["SAMLRequest"]), -15).decode()
        from saml2 import samlp

        return samlp.logout_request_from_string(xml), q

    def logout_response(self, request: Any, relay: str | None, sp_slo_url: str) -> str:
        from saml2 import BINDING_HTTP_REDIRECT

        resp = self.server.create_logout_response(request, [BINDING_HTTP_REDIRECT], sign=False)
        info = self.server.apply_binding(BINDING_HTTP_REDIRECT, str(resp), sp_slo_url, relay or "", response=True,
                                         sign=True, sigalg=SIG_RSA_SHA256)
        return str(dict(info["headers"])["Location"])


def form(xml: str, relay: str | None) -> dict[str, str]:
    out = {"SAMLResponse": base64.b64encode(xml.encode("utf-8")).decode("ascii")}
    if relay is not None:
        out["RelayState"] = relay
    return out


def decode_form(data: dict[str, str]) -> str:
    return base64.b64decode(data["SAMLResponse"]).decode("utf-8")
