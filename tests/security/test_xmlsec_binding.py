"""The in-process verifier (``xmlsecBackend: binding``) on its own, past the pre-scan.

The ACS pre-scan refuses every shape below before any verifier runs (the SAML
suite, run against both verifiers, shows that). Here each is handed to
:class:`~flask_ccsso.providers.saml_binding.BindingVerifier` directly, signed
for real (by the ``xmlsec`` binding's own signer, with real keys), to show that
the restrictions of the hardened ``xmlsec1 --verify`` run hold inside the
process too: the key comes from the metadata certificate only (a ``KeyInfo``
is never read), the one Reference must point at the signature's parent by its
ID, only the allowed transforms and algorithms run, the signature is the one
the XPath pins, IDs are those of Response and Assertion, and nothing is fetched.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from flask_ccsso.providers import saml_binding
from flask_ccsso.providers.saml_xmlsec import ASSERTION_SIGNATURE, RESPONSE_SIGNATURE
from tests.support.saml_idp import KeyPair, make_keypair

if saml_binding.available() is not None:  # pragma: no cover - the test extra installs it
    pytest.skip(f"xmlsec binding: {saml_binding.available()}", allow_module_level=True)

from tests.support.saml_signing import RESPONSE, T, sign


@pytest.fixture(scope="module")
def keys(tmp_path_factory: Any) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("keys")
    return {"idp": make_keypair(str(d / "idp"), "idp"), "attacker": make_keypair(str(d / "attacker"), "attacker")}


def b64(kp: KeyPair) -> str:
    return kp.cert_b64


@pytest.fixture
def verifier() -> saml_binding.BindingVerifier:
    return saml_binding.BindingVerifier()


def test_a_genuine_signature_verifies_with_the_metadata_certificate_only(verifier, keys):
    doc = sign(RESPONSE, keys["idp"])
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is True
    # tampered after signing
    assert verifier.verify(doc.replace(b"alice@", b"admin@"), ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False
    # another certificate: no key of the document's own is ever used instead
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [b64(keys["attacker"])]) is False
    # the metadata certificates are tried in order; one of them suffices
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [b64(keys["attacker"]), b64(keys["idp"])]) is True


def test_a_key_in_keyinfo_is_never_trusted(verifier, keys):
    """Signed by the attacker, who put their own certificate in KeyInfo."""
    doc = sign(RESPONSE, keys["attacker"])
    assert b64(keys["attacker"]).encode()[:40] in doc.replace(b"\n", b"")
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False


@pytest.mark.parametrize("variant", [
    pytest.param({"c14n": T.C14N}, id="inclusive-c14n-signedinfo"),
    pytest.param({"transforms": (T.ENVELOPED, T.C14N)}, id="inclusive-c14n-reference"),
    pytest.param({"transforms": (T.ENVELOPED, T.XPATH)}, id="xpath-transform"),
    pytest.param({"digest": T.SHA1}, id="sha1-digest"),
    pytest.param({"method": T.RSA_SHA1}, id="rsa-sha1"),
    pytest.param({"uri": ""}, id="whole-document-reference"),
    pytest.param({"uri": "#resp-1"}, id="reference-to-another-element"),
])
def test_shapes_the_prescan_refuses_fail_in_process_too(verifier, keys, variant):
    """Genuinely signed with the IdP's key, in a shape outside the allow-list."""
    doc = sign(RESPONSE, keys["idp"], **variant)
    assert verifier.verify(doc, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False


def test_only_the_pinned_signature_counts(verifier, keys):
    """The assertion is signed; asking for the Response's signature finds none."""
    doc = sign(RESPONSE, keys["idp"])
    assert verifier.verify(doc, RESPONSE_SIGNATURE, [b64(keys["idp"])]) is False
    signed_response = sign(RESPONSE, keys["idp"], where="response")
    assert verifier.verify(signed_response, RESPONSE_SIGNATURE, [b64(keys["idp"])]) is True
    assert verifier.verify(signed_response, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False


def test_duplicate_ids_are_refused(verifier, keys):
    """A second element claiming the signed assertion's ID (wrapping): not verified."""
    doc = sign(RESPONSE, keys["idp"])
    wrapped = doc.replace(b"</samlp:Response>",
                          b'<saml:Assertion ID="assert-1" Version="2.0"/></samlp:Response>')
    assert verifier.verify(wrapped, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False


def test_ids_of_other_elements_are_not_registered(verifier, keys):
    """``--id-attr:ID`` names Response and Assertion only: a signature over an
    element of another name, referenced by its ID, does not verify."""
    other = RESPONSE.replace("<saml:Assertion ", "<saml:Advice ").replace("</saml:Assertion>", "</saml:Advice>")
    doc = sign(other, keys["idp"], where="advice", uri="#assert-1", key_info=None)
    xpath = ASSERTION_SIGNATURE.replace("'Assertion'", "'Advice'")
    assert verifier.verify(doc, xpath, [b64(keys["idp"])]) is False


def test_nothing_is_fetched(verifier, keys, canary):
    """A Reference to a remote URI, and a DOCTYPE with an external entity, hand-fed
    past the pre-scan: refused, and the loopback server hears nothing."""
    doc = sign(RESPONSE, keys["idp"])
    remote = doc.replace(b'URI="#assert-1"', f'URI="{canary.url}/ref"'.encode())
    assert verifier.verify(remote, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False
    xxe = (f'<!DOCTYPE r [<!ENTITY x SYSTEM "{canary.url}/dtd">]>'.encode()
           + doc.replace(b"alice@example.com", b"&x;"))
    assert verifier.verify(xxe, ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False
    assert canary.hits == []


def test_garbage_and_unusable_certificates_are_a_plain_no(verifier, keys):
    doc = sign(RESPONSE, keys["idp"])
    assert verifier.verify(b"<not xml", ASSERTION_SIGNATURE, [b64(keys["idp"])]) is False
    assert verifier.verify(doc, "///", [b64(keys["idp"])]) is False
    assert verifier.verify(doc, ASSERTION_SIGNATURE, ["not base64!", base64.b64encode(b"junk").decode()]) is False
    assert verifier.verify(doc, ASSERTION_SIGNATURE, []) is False
