"""Red-team review of the in-process verifier (``xmlsecBackend: binding``).

Each attack is a real signature (the IdP's own, from pysaml2/xmlsec1, or made
by the ``xmlsec`` binding's signer) in a hostile shape, handed to
:class:`~flask_ccsso.providers.saml_binding.BindingVerifier` directly -- past
the pre-scan, which refuses all of them first (shown too, through the ACS):

* namespaced-ID wrapping: ``x:ID="decoy" ID="<signed id>"`` on a forged
  assertion that carries the genuine signature, with the genuine assertion
  (signature removed) elsewhere. libxmlsec1 registers the *first* attribute
  named ``ID`` in any namespace, so ``#<signed id>`` resolved to the genuine
  assertion and the forged one verified -- in process as in the xmlsec1 run;
* HMAC keyed with the metadata certificate (DER, PEM, SPKI, base64): the
  classic key confusion, never accepted;
* an ECDSA signature by the attacker's key, its certificate in KeyInfo,
  against an RSA metadata certificate: the key type must match and KeyInfo is
  never read.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from flask_ccsso.providers import saml_binding
from flask_ccsso.providers.saml_xmlsec import ASSERTION_SIGNATURE, RESPONSE_SIGNATURE
from tests.support.saml import login, post, refused
from tests.support.saml_idp import KeyPair, User, decode_form, form, make_keypair

if saml_binding.available() is not None:  # pragma: no cover - the test extra installs it
    pytest.skip(f"xmlsec binding: {saml_binding.available()}", allow_module_level=True)

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree

from tests.support.saml_signing import DS, RESPONSE, SAML, SAMLP, T, sign


@pytest.fixture(scope="module")
def idp_keys(tmp_path_factory: Any) -> KeyPair:
    return make_keypair(str(tmp_path_factory.mktemp("keys") / "idp"), "idp")


@pytest.fixture
def verifier() -> saml_binding.BindingVerifier:
    return saml_binding.BindingVerifier()


def _wrap_with_foreign_id(signed: bytes, *, where: str) -> bytes:
    """XSW with a namespaced ID: the genuinely signed element keeps its bytes
    (its enveloped signature removed, as the digest saw it) but moves aside;
    a forged copy, ``x:ID`` first and the genuine ``ID`` second, carries the
    genuine signature and says ``admin@evil.example``."""
    root = etree.fromstring(signed)
    if where == "assertion":
        genuine = root.find(f"{{{SAML}}}Assertion")
    else:
        genuine = root
    sig = genuine.find(f"{{{DS}}}Signature")
    genuine.remove(sig)
    forged = etree.Element(genuine.tag, nsmap=genuine.nsmap)
    forged.set("{urn:x}ID", "decoy")  # first: what libxmlsec1 registers for this element
    for k, v in genuine.attrib.items():
        forged.set(k, v)
    for child in genuine:
        forged.append(etree.fromstring(etree.tostring(child)))
    forged.insert(1, sig)  # after the Issuer, as the IdP placed it
    for nid in forged.iter(f"{{{SAML}}}NameID"):
        nid.text = "admin@evil.example"
    if where == "assertion":
        root.replace(genuine, forged)
        forged.addnext(genuine)  # the genuine assertion, unsigned now, after the forged one
        return etree.tostring(root)
    # the Response itself: the genuine one goes inside the forged one, whose
    # assertion (now saying admin) takes an ID of its own (no duplicate to notice)
    forged.find(f"{{{SAML}}}Assertion").set("ID", "assert-evil")
    forged.append(genuine)
    return etree.tostring(forged)


@pytest.mark.parametrize("where", ["assertion", "response"])
def test_namespaced_id_wrapping_is_refused_in_process(verifier, idp_keys, where):
    signed = sign(RESPONSE, idp_keys, where=where)
    xpath = ASSERTION_SIGNATURE if where == "assertion" else RESPONSE_SIGNATURE
    assert verifier.verify(signed, xpath, [idp_keys.cert_b64]) is True
    wrapped = _wrap_with_foreign_id(signed, where=where)
    assert b"admin@evil.example" in wrapped and b'ID="decoy"' in wrapped
    assert verifier.verify(wrapped, xpath, [idp_keys.cert_b64]) is False



def test_a_namespaced_id_anywhere_on_a_response_or_assertion_is_refused(verifier, idp_keys):
    """Even after the plain ``ID`` (where libxmlsec1 would still take the plain
    one) and on an element the signature does not cover: the pre-scan's rule
    (:func:`.saml_xml.check_ids`), held in process too."""
    signed = sign(RESPONSE, idp_keys)
    assert verifier.verify(signed, ASSERTION_SIGNATURE, [idp_keys.cert_b64]) is True
    later = signed.replace(b' ID="resp-1"', b' ID="resp-1" xmlns:x="urn:x" x:ID="decoy"', 1)
    assert later != signed
    assert verifier.verify(later, ASSERTION_SIGNATURE, [idp_keys.cert_b64]) is False


def test_namespaced_id_wrapping_of_a_real_idp_response_is_refused_at_the_acs(saml_portal, idp, failures):
    """The same wrapping on a response the IdP (pysaml2 + xmlsec1) really signed: a 400, no session."""
    app, client = saml_portal()
    data = idp.respond(login(client), User(email="mallory@example.com"))
    wrapped = _wrap_with_foreign_id(decode_form(data).encode(), where="assertion")
    prov = app.extensions["ccsso"].providers["google"]
    # past the pre-scan the verifier in use refuses it too (binding: this review's fix)
    if prov.xmlsec_runner.backend == "binding":
        assert prov.xmlsec_runner.verify(wrapped, ASSERTION_SIGNATURE, list(prov.idp().signing_certs)) is False
    resp = post(client, form(wrapped.decode(), data.get("RelayState")))
    assert refused(resp, failures, "invalid_response")
    assert client.get("/me").status_code != 200


@pytest.mark.parametrize("form_", ["der", "pem", "spki", "b64"])
def test_hmac_keyed_with_the_metadata_certificate_is_refused(verifier, idp_keys, form_):
    cert = x509.load_pem_x509_certificate(idp_keys.cert_pem.encode())
    secret = {
        "der": base64.b64decode(idp_keys.cert_b64),
        "pem": idp_keys.cert_pem.encode(),
        "spki": cert.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
        "b64": idp_keys.cert_b64.encode(),
    }[form_]
    hmac = xmlsec.Key.from_binary_data(xmlsec.constants.KeyDataHmac, secret)
    doc = sign(RESPONSE.replace("alice@", "admin@"), hmac, method=T.HMAC_SHA256, key_info=None)
    assert b"hmac-sha256" in doc
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [idp_keys.cert_b64]) is False


def test_an_attackers_ecdsa_key_in_keyinfo_is_not_used(verifier, idp_keys, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    attacker = xmlsec.Key.from_memory(pem, xmlsec.KeyFormat.PEM)
    doc = sign(RESPONSE.replace("alice@", "admin@"), attacker, method=T.ECDSA_SHA256, key_info="value")
    assert b"ECKeyValue" in doc or b"KeyValue" in doc
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [idp_keys.cert_b64]) is False


def test_samlp_namespace_is_what_the_response_xpath_pins(verifier, idp_keys):
    """Sanity for the wrapping test above: the Response variant really is a Response."""
    signed = sign(RESPONSE, idp_keys, where="response")
    assert etree.fromstring(signed).tag == f"{{{SAMLP}}}Response"
    assert verifier.verify(signed, RESPONSE_SIGNATURE, [idp_keys.cert_b64]) is True
