"""Building SAML logout messages for the attack tests: real messages from the
harness IdP (pysaml2's ``Server``), signed with its real key -- over the
redirect binding with ``cryptography`` (the octets SAML bindings 3.4.4.1
sign), over the POST binding with xmlsec1 through pysaml2.

Not a test module: the security tests import these helpers.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.support.saml_idp import DIGEST_SHA256, SIG_RSA_SHA256, SAMLIdP

SLO = "http://localhost/sso/google/slo"
LOGOUT_RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutResponse"


def deflate_b64(xml: str) -> str:
    return base64.b64encode(zlib.compress(xml.encode("utf-8"))[2:-4]).decode("ascii")


def redirect_query(idp: SAMLIdP | None, param: str, xml: str, relay: str | None = "idp-relay") -> str:
    """``param=...&RelayState=...&SigAlg=...&Signature=...`` signed with the
    IdP's key (``idp=None``: unsigned)."""
    query = f"{param}=" + quote(deflate_b64(xml), safe="")
    if relay is not None:
        query += "&RelayState=" + quote(relay, safe="")
    if idp is None:
        return query
    query += "&SigAlg=" + quote(SIG_RSA_SHA256, safe="")
    key = serialization.load_pem_private_key(idp.keys.key_pem.encode(), password=None)
    sig = key.sign(query.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
    return query + "&Signature=" + quote(base64.b64encode(sig).decode("ascii"), safe="")


def logout_request_xml(idp: SAMLIdP, name_id: str, session_index: str | None, *, destination: str = SLO) -> str:
    """A LogoutRequest as the IdP builds it (fresh ID each call)."""
    from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID

    _id, req = idp.server.create_logout_request(
        destination, idp.entity_id, name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
        session_indexes=[session_index] if session_index else None, sign=False)
    return str(req)


def logout_request_path(idp: SAMLIdP | None, xml: str, relay: str | None = "idp-relay") -> str:
    return "/sso/google/slo?" + redirect_query(idp, "SAMLRequest", xml, relay)


def raw_param(path: str, name: str) -> str:
    """The raw (still percent-encoded) value of ``name`` in a path's query."""
    for piece in urlsplit(path).query.split("&"):
        k, _, v = piece.partition("=")
        if k == name:
            return v
    raise KeyError(name)


def sp_logout_request(location: str) -> tuple[Any, str | None]:
    """The LogoutRequest the portal redirected to, and its RelayState."""
    from saml2 import samlp

    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"]), -15).decode()
    return samlp.logout_request_from_string(xml), q.get("RelayState")


def logout_response_xml(idp: SAMLIdP, request: Any, *, status: str | None = None, destination: str = SLO,
                        issuer: str | None = None) -> Any:
    """A LogoutResponse (pysaml2 object) answering ``request``."""
    from saml2 import samlp
    from saml2.saml import Issuer

    resp = idp.server.create_logout_response(request, ["urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"],
                                             sign=False)
    resp = samlp.logout_response_from_string(str(resp))
    resp.destination = destination
    if issuer is not None:
        resp.issuer = Issuer(text=issuer, format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity")
    if status is not None:
        resp.status.status_code.value = status
    return resp


def xml_signed(idp: SAMLIdP, resp: Any) -> str:
    """``resp`` with an enveloped XML signature by ``idp``'s key (xmlsec1 via pysaml2)."""
    from saml2.sigver import pre_signature_part

    sec = idp.server.sec
    resp.signature = pre_signature_part(resp.id, sec.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    return str(sec.sign_statement(str(resp), LOGOUT_RESPONSE, node_id=resp.id))


def post_form(xml: str, relay: str | None = None) -> str:
    """An HTTP-POST binding body (urlencoded, as a browser posts it)."""
    body = "SAMLResponse=" + quote(base64.b64encode(xml.encode("utf-8")).decode("ascii"), safe="")
    if relay is not None:
        body += "&RelayState=" + quote(relay, safe="")
    return body
