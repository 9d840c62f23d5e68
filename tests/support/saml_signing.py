"""Real enveloped XML signatures in any shape, made with the ``xmlsec`` binding's own signer.

The tests of the in-process verifier (tests/security/test_xmlsec_binding.py and the red-team
review, tests/security/test_review_saml_binding.py) sign a SAML Response genuinely -- with
the IdP's key, an attacker's, an HMAC secret or an ECDSA key -- in shapes the ACS pre-scan
refuses, and hand the result to :class:`~flask_ccsso.providers.saml_binding.BindingVerifier`
directly. Import this module only once ``saml_binding.available()`` said the binding is there.
"""

from __future__ import annotations

from typing import Any

import xmlsec
from lxml import etree

from tests.support.saml_idp import KeyPair

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
T = xmlsec.Transform

#: a Response with one Assertion (``resp-1`` / ``assert-1``) for alice, unsigned
RESPONSE = (
    f'<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="resp-1" Version="2.0" '
    'IssueInstant="2026-01-01T00:00:00Z" Destination="http://localhost/sso/google/acs">'
    '<saml:Issuer>https://idp.example.test/saml</saml:Issuer>'
    '<saml:Assertion ID="assert-1" Version="2.0" IssueInstant="2026-01-01T00:00:00Z">'
    '<saml:Issuer>https://idp.example.test/saml</saml:Issuer>'
    '<saml:Subject><saml:NameID>alice@example.com</saml:NameID></saml:Subject>'
    '</saml:Assertion></samlp:Response>'
)

#: what ``where`` names: the Response itself, or its first child element of that name
_ELEMENTS = {"assertion": "Assertion", "advice": "Advice"}


def sign(xml: str, key: KeyPair | xmlsec.Key, *, where: str = "assertion", c14n: Any = T.EXCL_C14N,
         method: Any = T.RSA_SHA256, digest: Any = T.SHA256,
         transforms: tuple[Any, ...] = (T.ENVELOPED, T.EXCL_C14N), uri: str | None = None,
         key_info: str | None = "x509") -> bytes:
    """``xml`` with a real enveloped signature on the Assertion (``where``: or ``"response"``, ``"advice"``).

    ``key``: a key pair (its private key, and its certificate for ``KeyInfo``) or any
    ``xmlsec.Key`` (an HMAC secret, an ECDSA key). ``uri`` defaults to ``#`` + the signed
    element's ID. ``key_info``: ``"x509"`` (the certificate), ``"value"`` (the public key) or
    None (no ``KeyInfo``). Every other argument bends the signature into a shape a verifier
    must refuse, each still genuinely signed.
    """
    root = etree.fromstring(xml.encode())
    el = root if where == "response" else root.find(f"{{{SAML}}}{_ELEMENTS[where]}")
    assert el is not None, f"no {where} to sign"
    sig = xmlsec.template.create(el, c14n, method)
    el.insert(1, sig)  # after the Issuer
    ref = xmlsec.template.add_reference(sig, digest, uri=f"#{el.get('ID')}" if uri is None else uri)
    for t in transforms:
        node = xmlsec.template.add_transform(ref, t)
        if t == T.XPATH:  # an XPath filter that keeps every node: the signature is genuine
            etree.SubElement(node, f"{{{DS}}}XPath").text = "1"
    if key_info == "x509":
        xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(sig))
    elif key_info == "value":
        xmlsec.template.add_key_value(xmlsec.template.ensure_key_info(sig))
    else:
        assert key_info is None, key_info
    ctx = xmlsec.SignatureContext()
    signed = [root, *root.iter(f"{{{SAML}}}Assertion")]
    for e in signed if el in signed else [*signed, el]:
        ctx.register_id(e, "ID")
    if isinstance(key, KeyPair):
        pair = key
        key = xmlsec.Key.from_file(pair.key_path, xmlsec.KeyFormat.PEM)
        key.load_cert_from_file(pair.cert_path, xmlsec.KeyFormat.PEM)
    ctx.key = key
    ctx.sign(sig)
    return etree.tostring(root)
