"""Issue #10 item 1: encrypted SAML assertions must not be an authentication bypass.

The red team's forgery needs only the public SP metadata and one
``GET /sso/<p>/login``: an assertion of the attacker's making (any NameID, any
groups), its ``ds:Signature`` itself replaced by an ``xenc:EncryptedData``,
plus an ``Advice/EncryptedAssertion``, all encrypted to the SP's public
certificate. pysaml2's second decryption pass took the decrypted assertion as
verified; flask-ccsso took "a signature element is present" as proof.

The class: a signature counts only when flask-ccsso's own xmlsec1 run
verified it with a certificate from the IdP metadata; nothing is decrypted
unless ``wantAssertionsEncrypted`` is set (and then plain assertions are
refused); the decrypted assertion passes the same pre-scan as a plain one,
and encrypted content inside it is refused.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import pytest

from tests.security.saml_encryption import (
    ACS,
    DS,
    GROUPS_URI,
    MAPPING,
    SAML,
    SAMLP,
    SP_ENTITY,
    authn_request_id,
    count_xmlsec,
    encrypt_node,
    login,
    post,
    relay_of,
    wrap_and_encrypt_assertion,
    xp,
)
from tests.support.saml_idp import PPT, SAMLIdP, User, decode_form

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
EMAIL_FMT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def bogus_signature(ref: str) -> str:
    """A well-shaped ds:Signature that no key ever made."""
    return (f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{EXC}"/>'
            '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
            f'<ds:Reference URI="#{ref}"><ds:Transforms>'
            f'<ds:Transform Algorithm="{DS}enveloped-signature"/><ds:Transform Algorithm="{EXC}"/>'
            '</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
            '<ds:DigestValue>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</ds:DigestValue></ds:Reference>'
            '</ds:SignedInfo><ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>')


def attacker_assertion(idp_entity: str, req_id: str, *, aid: str, email: str = "admin@example.com",
                       groups: tuple[str, ...] = ("database-admins", "security-team"), signature: str = "",
                       advice: str = "") -> str:
    now = time.time()
    attrs = "".join(f"<saml:AttributeValue>{g}</saml:AttributeValue>" for g in groups)
    return (
        f'<saml:Assertion xmlns:saml="{SAML}" ID="{aid}" Version="2.0" IssueInstant="{iso(now)}">'
        f"<saml:Issuer>{idp_entity}</saml:Issuer>{signature}"
        f'<saml:Subject><saml:NameID Format="{EMAIL_FMT}">{email}</saml:NameID>'
        f'<saml:SubjectConfirmation Method="{BEARER}"><saml:SubjectConfirmationData InResponseTo="{req_id}" '
        f'NotOnOrAfter="{iso(now + 300)}" Recipient="{ACS}"/></saml:SubjectConfirmation></saml:Subject>'
        f'<saml:Conditions NotBefore="{iso(now - 5)}" NotOnOrAfter="{iso(now + 300)}"><saml:AudienceRestriction>'
        f"<saml:Audience>{SP_ENTITY}</saml:Audience></saml:AudienceRestriction></saml:Conditions>{advice}"
        f'<saml:AuthnStatement AuthnInstant="{iso(now - 2)}" SessionIndex="s-{aid}"><saml:AuthnContext>'
        f"<saml:AuthnContextClassRef>{PPT}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
        f'<saml:AttributeStatement><saml:Attribute Name="{MAPPING["email"]}"><saml:AttributeValue>{email}'
        f'</saml:AttributeValue></saml:Attribute><saml:Attribute Name="{GROUPS_URI}">{attrs}</saml:Attribute>'
        "</saml:AttributeStatement></saml:Assertion>")


def attacker_response(idp_entity: str, req_id: str, body: str) -> str:
    return (f'<?xml version="1.0"?><samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" '
            f'ID="_r{uuid.uuid4().hex}" InResponseTo="{req_id}" Version="2.0" IssueInstant="{iso(time.time())}" '
            f'Destination="{ACS}"><saml:Issuer>{idp_entity}</saml:Issuer>'
            f'<samlp:Status><samlp:StatusCode Value="{SUCCESS}"/></samlp:Status>{body}</samlp:Response>')


ENC_ASSERTION = xp((SAMLP, "Response"), (SAML, "EncryptedAssertion"), (SAML, "Assertion"))


def red_team_forgery(idp_entity: str, location: str, sp_cert: str) -> str:
    """The exact forgery from the report: signature slot holds EncryptedData,
    Advice holds an EncryptedAssertion, the whole assertion encrypted to the SP."""
    req_id = authn_request_id(location)
    aid = f"_a{uuid.uuid4().hex}"
    advice = (f"<saml:Advice><saml:EncryptedAssertion>"
              f'<saml:Assertion ID="_adv{uuid.uuid4().hex}" Version="2.0" IssueInstant="{iso(time.time())}">'
              f"<saml:Issuer>{idp_entity}</saml:Issuer></saml:Assertion></saml:EncryptedAssertion></saml:Advice>")
    inner = attacker_assertion(idp_entity, req_id, aid=aid, signature=bogus_signature(aid), advice=advice)
    xml = attacker_response(idp_entity, req_id, f"<saml:EncryptedAssertion>{inner}</saml:EncryptedAssertion>")
    xml = encrypt_node(xml, ENC_ASSERTION + xp((DS, "Signature")), sp_cert)
    xml = encrypt_node(xml, ENC_ASSERTION + xp((SAML, "Advice"), (SAML, "EncryptedAssertion"), (SAML, "Assertion")),
                       sp_cert)
    xml = encrypt_node(xml, ENC_ASSERTION, sp_cert)
    assert "EncryptedData" in xml and "admin@example.com" not in xml
    return xml


def signed_in(client) -> bool:
    return client.get("/me", headers={"Accept": "application/json"}).status_code == 200


def refused(resp, failures, reason: str = "invalid_response") -> None:
    assert resp.status_code == 400, resp.data
    assert failures and failures[-1]["reason"] == reason, failures


# ---------------------------------------------------------------------------- the red team's forgery

@pytest.mark.parametrize("settings", [{}, {"wantAssertionsEncrypted": True},
                                      {"wantAssertionsEncrypted": True, "wantResponseSigned": False}])
def test_red_team_forged_encrypted_assertion_is_refused(encrypted_portal, idp, sp_keys, failures, settings):
    """Default settings (SP key pair configured): the forgery signed the attacker in
    as admin with any groups. Now refused, and nothing is decrypted with the
    setting off."""
    _app, client = encrypted_portal(**settings)
    location = login(client)
    xml = red_team_forgery(idp.entity_id, location, sp_keys.cert_path)
    resp = post(client, xml, relay_of(location))
    refused(resp, failures)
    assert not signed_in(client)
    assert client.get("/migrations", headers={"Accept": "application/json"}).status_code in (401, 403)


def test_forgery_refused_before_decryption_when_setting_is_off(encrypted_portal, idp, sp_keys, failures, monkeypatch):
    _app, client = encrypted_portal()
    location = login(client)
    xml = red_team_forgery(idp.entity_id, location, sp_keys.cert_path)
    calls = count_xmlsec(monkeypatch)
    resp = post(client, xml, relay_of(location))
    refused(resp, failures)
    assert b"wantAssertionsEncrypted" in resp.data
    assert calls == []   # no xmlsec1 at all: nothing decrypted


# ---------------------------------------------------------------------------- variants

def test_unsigned_encrypted_assertion(encrypted_portal, idp, sp_keys, failures):
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    location = login(client)
    req_id = authn_request_id(location)
    inner = attacker_assertion(idp.entity_id, req_id, aid=f"_a{uuid.uuid4().hex}")
    xml = attacker_response(idp.entity_id, req_id, f"<saml:EncryptedAssertion>{inner}</saml:EncryptedAssertion>")
    xml = encrypt_node(xml, ENC_ASSERTION, sp_keys.cert_path)
    refused(post(client, xml, relay_of(location)), failures)
    assert not signed_in(client)


def test_encrypted_assertion_with_bogus_signature(encrypted_portal, idp, sp_keys, failures, caplog):
    """A ds:Signature element is present (well-shaped) but no key made it."""
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    location = login(client)
    req_id = authn_request_id(location)
    aid = f"_a{uuid.uuid4().hex}"
    inner = attacker_assertion(idp.entity_id, req_id, aid=aid, signature=bogus_signature(aid))
    xml = attacker_response(idp.entity_id, req_id, f"<saml:EncryptedAssertion>{inner}</saml:EncryptedAssertion>")
    xml = encrypt_node(xml, ENC_ASSERTION, sp_keys.cert_path)
    with caplog.at_level(logging.INFO, logger="flask_ccsso"):
        resp = post(client, xml, relay_of(location))
    refused(resp, failures)
    # no Response signature covers the ciphertext: one answer for every step (no decryption
    # oracle); the step that refused it is in the server's log
    assert b"could not be decrypted and verified" in resp.data
    assert "signature is not valid" in caplog.text
    assert not signed_in(client)


def test_encrypted_assertion_signed_by_a_foreign_key(encrypted_portal, idp, sp_keys, failures, tmp_path):
    """A rogue IdP with our IdP's entity id and its own key signs and encrypts properly."""
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    rogue = SAMLIdP(str(tmp_path / "rogue"), entity_id=idp.entity_id, base=idp.base, cn="rogue")
    rogue.trust_sp(client.get("/sso/google/metadata").data.decode())
    location = login(client)
    data = rogue.respond(location, User(email="admin@example.com"), encrypt=True)
    assert "EncryptedAssertion" in decode_form(data)
    refused(post(client, decode_form(data), data["RelayState"]), failures)
    # without KeyInfo nothing even hints at the key: our xmlsec1 run must refuse it
    location = login(client)
    plain = rogue.respond(location, User(email="admin@example.com"))
    xml = re.sub(r"<(\w+):KeyInfo>.*?</\1:KeyInfo>", "", decode_form(plain), flags=re.DOTALL)
    xml = wrap_and_encrypt_assertion(xml, sp_keys.cert_path)
    refused(post(client, xml, plain["RelayState"]), failures)
    assert not signed_in(client)


def test_idp_signed_assertion_tampered_then_encrypted(encrypted_portal, idp, sp_keys, failures):
    """The attacker takes their own genuine IdP-signed assertion, adds a group,
    and encrypts it to the SP (the IdP's signature no longer matches)."""
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    location = login(client)
    data = idp.respond(location, User(groups=["engineering"]))
    xml = decode_form(data).replace(">engineering<", ">database-admins<")
    xml = wrap_and_encrypt_assertion(xml, sp_keys.cert_path)
    refused(post(client, xml, data["RelayState"]), failures)
    assert not signed_in(client)


@pytest.mark.parametrize("where", ["advice", "attribute"])
def test_signed_assertion_with_encrypted_content_inside_is_refused(encrypted_portal, idp, sp_keys, failures, where, caplog):
    """Even an IdP-signed assertion may not carry encrypted content (Advice/EncryptedAssertion,
    EncryptedAttribute): nothing inside a decrypted assertion is ever decrypted."""
    from saml2 import saml
    from saml2.xmlenc import CipherData, CipherValue, EncryptedData

    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    location = login(client)

    def blob() -> EncryptedData:
        return EncryptedData(cipher_data=CipherData(cipher_value=CipherValue(text="AAAA")))

    def mutate(r: Any) -> None:
        a = r.assertion[0]
        if where == "advice":
            a.advice = saml.Advice(encrypted_assertion=[saml.EncryptedAssertion(encrypted_data=blob())])
        else:
            a.attribute_statement[0].encrypted_attribute = [saml.EncryptedAttribute(encrypted_data=blob())]

    data = idp.respond(location, User(), mutate=mutate)
    assert "EncryptedData" in decode_form(data)
    xml = wrap_and_encrypt_assertion(decode_form(data), sp_keys.cert_path)
    with caplog.at_level(logging.INFO, logger="flask_ccsso"):
        resp = post(client, xml, data["RelayState"])
    refused(resp, failures)
    assert b"could not be decrypted and verified" in resp.data  # one answer: no decryption oracle
    assert "encrypted content" in caplog.text or "nested" in caplog.text
    assert not signed_in(client)


def test_encrypted_assertion_refused_when_setting_is_off(encrypted_portal, idp, sp_keys, failures, monkeypatch):
    """A genuine, IdP-signed assertion, encrypted to the SP: with wantAssertionsEncrypted
    false (the default) it is refused before any decryption."""
    _app, client = encrypted_portal()
    location = login(client)
    data = idp.respond(location, User())
    xml = wrap_and_encrypt_assertion(decode_form(data), sp_keys.cert_path)
    calls = count_xmlsec(monkeypatch)
    refused(post(client, xml, data["RelayState"]), failures)
    assert calls == []


def test_plain_assertion_refused_when_encryption_is_required(encrypted_portal, idp, failures):
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    location = login(client)
    data = idp.respond(location, User())
    resp = post(client, decode_form(data), data["RelayState"])
    refused(resp, failures)
    assert b"not encrypted" in resp.data
    assert not signed_in(client)


def test_encryption_setting_needs_the_key_pair(make_app, idp, tmp_path):
    from flask_ccsso.exceptions import ConfigError
    from tests.security.saml_encryption import provider_block

    meta = idp.write_metadata(str(tmp_path / "m.xml"))
    with pytest.raises(ConfigError) as e:
        make_app({"auth": {"providers": {"google": provider_block(meta, wantAssertionsEncrypted=True)}},
                  "session": {"cookieSecure": False}})
    assert "wantAssertionsEncrypted" in str(e.value)


def test_sp_metadata_offers_an_encryption_key_only_when_asked(encrypted_portal):
    _app, client = encrypted_portal()
    assert 'use="encryption"' not in client.get("/sso/google/metadata").data.decode()
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    assert 'use="encryption"' in client.get("/sso/google/metadata").data.decode()


# ---------------------------------------------------------------------------- the legitimate paths

@pytest.mark.parametrize("shape", ["assertion-signed", "both-signed", "response-signed-only"])
def test_real_idp_encrypted_assertion_signs_in(encrypted_portal, idp, shape, monkeypatch):
    over: dict[str, Any] = {"wantAssertionsEncrypted": True}
    kw: dict[str, Any] = {"encrypt": True}
    if shape == "both-signed":
        over["wantResponseSigned"] = True
        kw["sign_response"] = True
    elif shape == "response-signed-only":
        over.update(wantResponseSigned=True, wantAssertionsSigned=False)
        kw.update(sign_response=True, sign_assertion=False)
    _app, client = encrypted_portal(**over)
    data = idp.respond(login(client), User(), **kw)
    assert "EncryptedAssertion" in decode_form(data)
    calls = count_xmlsec(monkeypatch)
    resp = client.post("/sso/google/acs", data=data)
    assert resp.status_code == 303, resp.data
    me = client.get("/me").get_json()
    assert me["email"] == "alice@example.com" and "database-admins" in me["groups"]
    ops = [c[1] for c in calls]
    assert ops.count("--decrypt") == 1 and ops.count("--verify") == (2 if shape == "both-signed" else 1), ops
    # every run is ours, with the restrictions on (an in-process verification keeps
    # them in code: tests/security/test_xmlsec_binding.py hands it each shape they refuse)
    for c in calls:
        if c[0] == "xmlsec-binding":
            continue
        assert "--enabled-key-data" in c
        if c[1] == "--decrypt":
            assert c[c.index("--enabled-cipher-reference-uris") + 1] == "empty"
            assert c[c.index("--enabled-retrieval-method-uris") + 1] == "empty"
        else:
            assert c[c.index("--enabled-reference-uris") + 1] == "same-doc"


def test_response_signed_only_must_cover_the_encrypted_assertion(encrypted_portal, idp, sp_keys, failures):
    """wantResponseSigned with an unsigned assertion: swapping in another
    EncryptedAssertion breaks the Response signature."""
    _app, client = encrypted_portal(wantAssertionsEncrypted=True, wantResponseSigned=True, wantAssertionsSigned=False)
    location = login(client)
    data = idp.respond(location, User(groups=["engineering"]), encrypt=True, sign_response=True,
                       sign_assertion=False)
    genuine = decode_form(data)
    req_id = authn_request_id(location)
    inner = attacker_assertion(idp.entity_id, req_id, aid=f"_a{uuid.uuid4().hex}")
    evil = encrypt_node(attacker_response(idp.entity_id, req_id,
                                          f"<saml:EncryptedAssertion>{inner}</saml:EncryptedAssertion>"),
                        ENC_ASSERTION, sp_keys.cert_path)
    evil_ea = re.search(r"<saml:EncryptedAssertion>.*</saml:EncryptedAssertion>", evil, re.DOTALL).group(0)
    evil_ea = evil_ea.replace("<saml:EncryptedAssertion>", f'<saml:EncryptedAssertion xmlns:saml="{SAML}">', 1)
    swapped = re.sub(r"<(\w+):EncryptedAssertion>.*</\1:EncryptedAssertion>", lambda m: evil_ea, genuine,
                     flags=re.DOTALL)
    assert swapped != genuine
    refused(post(client, swapped, data["RelayState"]), failures)
    assert not signed_in(client)


# ---------------------------------------------------------------------------- pysaml2's logs

def test_no_document_text_in_logs(encrypted_portal, idp, sp_keys, failures, caplog, tmp_path):
    """A refused encrypted post (signature by a foreign key) leaves no document
    text in any log, at DEBUG -- pysaml2 used to log the decrypted assertion."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="saml2")
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    rogue = SAMLIdP(str(tmp_path / "rogue"), entity_id=idp.entity_id, base=idp.base, cn="rogue")
    rogue.trust_sp(client.get("/sso/google/metadata").data.decode())
    location = login(client)
    marker = "leaky-group-7f3a"
    data = rogue.respond(location, User(email="mallory@example.com", groups=[marker]), encrypt=True)
    refused(post(client, decode_form(data), data["RelayState"]), failures)
    # and pysaml2's own loggers, whatever they are handed, write no text of it
    logging.getLogger("saml2.response").error("Failed to verify signature on '%s'", f"<Assertion>{marker}</Assertion>")
    logging.getLogger("saml2").debug("decrypted: %s", marker)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (marker, "mallory@example.com", "CipherValue", "EncryptedData", "Assertion",
                   decode_form(data)[200:260]):
        assert secret not in text, secret
