"""The cheap pre-scan refuses bad shapes before xmlsec1 or pysaml2 run."""

from __future__ import annotations

import base64

import pytest

from flask_ccsso.exceptions import AuthenticationFailed
from flask_ccsso.providers.saml_xml import decode_b64, scan

ISS = "https://idp.example.test/saml"
SIG = ('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
       '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
       '<ds:SignatureMethod Algorithm="{sm}"/><ds:Reference URI="#{ref}"><ds:Transforms>'
       '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>{extra}'
       '</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
       '<ds:DigestValue>x</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>x</ds:SignatureValue>'
       '</ds:Signature>')
RSA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def response(assertion_body="", name_id="alice@example.com", sig=None, extra_in_response="", issuer=ISS):
    sig = sig if sig is not None else SIG.format(sm=RSA256, ref="a1", extra="")
    return (f'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" InResponseTo="q1" Version="2.0">'
            f'<saml:Issuer>{issuer}</saml:Issuer>{extra_in_response}'
            f'<saml:Assertion ID="a1" Version="2.0"><saml:Issuer>{issuer}</saml:Issuer>{sig}'
            f'<saml:Subject><saml:NameID>{name_id}</saml:NameID></saml:Subject>{assertion_body}</saml:Assertion>'
            f'</samlp:Response>').encode()


def reason(data: bytes) -> str:
    with pytest.raises(AuthenticationFailed) as e:
        scan(data, expected_issuer=ISS)
    return f"{e.value.reason}: {e.value.description}"


def test_a_clean_response_passes():
    s = scan(response(), expected_issuer=ISS)
    assert s.assertion_signed and not s.response_signed and s.name_id == "alice@example.com"
    assert s.in_response_to == "q1" and s.assertion_id == "a1"


@pytest.mark.parametrize("data, expected", [
    (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + response(), "DOCTYPE"),
    (b"<!doctype r>" + response(), "DOCTYPE"),
    (response().decode().encode("utf-16"), "encoding"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?>' + response(), "encoding"),
    (response(name_id="alice@example.com<!---->.evil.test"), "split by an XML comment"),
    (response(assertion_body="<!-- hi -->"), "comments"),
    (response(assertion_body="<?pi x?>"), "comments"),
    (response(issuer="https://evil.example"), "another identity provider"),
    (response(sig=""), None),   # shape is fine; signature policy is the provider's
    (response(sig=SIG.format(sm="http://www.w3.org/2000/09/xmldsig#rsa-sha1", ref="a1", extra="")), "algorithm"),
    (response(sig=SIG.format(sm=RSA256, ref="r1", extra="")), "does not cover"),
    (response(sig=SIG.format(sm=RSA256, ref="a1",
                             extra='<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"/>')),
     "transform"),
    (response(sig=SIG.format(sm=RSA256, ref="a1", extra="") * 2), "two signatures"),
    (response(extra_in_response='<saml:Assertion ID="a1" Version="2.0"/>'), "duplicate IDs"),
    (response(assertion_body='<saml:Advice><saml:Assertion ID="a2" Version="2.0"/></saml:Advice>'), "nested"),
    (response(extra_in_response='<samlp:Extensions><saml:Assertion ID="a3"/></samlp:Extensions>'), "nested"),
    (response(name_id="a<b>c</b>"), "markup"),
    (response(extra_in_response='<samlp:Extensions xml:id="a1"/>'), "duplicate IDs"),
    (response(assertion_body='<saml:EncryptedID><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"/>'
                             '</saml:EncryptedID>'), "encrypted content"),
    (response(sig='<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"/>'), "encrypted content"),
    (b"<not-saml/>", "expected type"),
    (b"<unclosed", "well-formed"),
])
def test_refused_shapes(data, expected):
    if expected is None:
        assert not scan(data, expected_issuer=ISS).assertion_signed
        return
    assert expected in reason(data)


def test_decode_b64_refuses_oversized_before_decoding():
    big = base64.b64encode(b"x" * 5000).decode()
    with pytest.raises(AuthenticationFailed, match="too large"):
        decode_b64(big, 1000)
    with pytest.raises(AuthenticationFailed, match="base64"):
        decode_b64("@@@@", 1000)
    assert decode_b64(base64.encodebytes(b"hello").decode(), 1000) == b"hello"
