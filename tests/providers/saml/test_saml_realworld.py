"""Shapes that real IdPs (Google Workspace, ADFS, Entra ID, Okta, Keycloak,
Shibboleth) produce, accepted -- and the attacks next to them still refused.

Every response is built by pysaml2's IdP (tests/interop/saml_idp), reshaped
as the named IdP shapes it, and then signed for real with xmlsec1 (the
signature template -- canonicalization, InclusiveNamespaces, position after
Issuer -- is written here, as each IdP writes it). Metadata documents are
fixtures under tests/data/saml/realworld/ with the test IdP's certificate put in.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from flask_ccsso.exceptions import ConfigError
from flask_ccsso.providers.saml_metadata import MetadataError, parse_idp_metadata
from tests.support import DATA
from tests.support.saml_idp import GROUPS_URI, SAMLIdP, User, form, make_keypair

pytestmark = pytest.mark.interop

HERE = DATA / "saml" / "realworld"
ACS = "http://localhost/sso/idp/acs"
SP_ENTITY = "https://portal.example.test"
EMAIL_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
INC = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
URI_FMT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BASIC_FMT = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
UNSPEC_FMT = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified"
NID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NID_UNSPEC = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
SKILLS = {"database-migration": {"allowedGroups": ["database-admins"]}}


# ------------------------------------------------------------------------------ helpers

def wrap(b64: str) -> str:
    """A certificate as ADFS / Google print it: 64-character lines, indented."""
    return "\n".join("          " + b64[i:i + 64] for i in range(0, len(b64), 64))


def render(name: str, idp: SAMLIdP, *, enc: str, other: str) -> str:
    text = (HERE / name).read_text()
    b64 = idp.keys.cert_b64.replace("\n", "")
    for k, v in {"@@ENTITY@@": idp.entity_id, "@@BASE@@": idp.base, "@@CERT_WRAPPED@@": wrap(b64),
                 "@@CERT@@": b64, "@@ENC_CERT@@": enc, "@@OTHER_CERT@@": other}.items():
        text = text.replace(k, v)
    return text


@pytest.fixture
def spare(tmp_path) -> tuple[str, str]:
    enc = make_keypair(str(tmp_path / "spare"), "enc").cert_b64.replace("\n", "")
    other = make_keypair(str(tmp_path / "spare"), "other").cert_b64.replace("\n", "")
    return enc, other


@pytest.fixture
def portal(make_app, idp, tmp_path, spare):
    """build(metadata_fixture_or_None, **provider keys) -> (app, client)."""

    def build(meta: str | None = None, **over: Any):
        path = tmp_path / "idp-metadata.xml"
        if meta is None:
            idp.write_metadata(str(path))
        else:
            path.write_text(render(meta, idp, enc=spare[0], other=spare[1]))
        block = {"provider": "saml", "idpMetadata": str(path), "spEntityId": SP_ENTITY,
                 "attributeMapping": {"email": EMAIL_URI, "name": NAME_URI, "groups": GROUPS_URI}}
        block.update(over)
        app = make_app({"auth": {"providers": {"idp": block}}, "session": {"cookieSecure": False}, "skills": SKILLS})
        client = app.test_client()
        idp.trust_sp(client.get("/sso/idp/metadata").data.decode())
        return app, client

    return build


def login(client) -> str:
    resp = client.get("/sso/idp/login?next=/me")
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def sig_template(ref_id: str, cert: str, c14n: str, prefix_list: str | None) -> str:
    incl = (f'<ec:InclusiveNamespaces xmlns:ec="{EXC}" PrefixList="{prefix_list}"/>'
            if prefix_list is not None else "")
    return (
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{c14n}"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
        f'<ds:Reference URI="#{ref_id}"><ds:Transforms>'
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        f'<ds:Transform Algorithm="{c14n}">{incl}</ds:Transform></ds:Transforms>'
        '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/>'
        '</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data>'
        f'<ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>')


def _insert_after_issuer(xml: str, start: int, template: str) -> str:
    m = re.compile(r"</(?:\w+:)?Issuer>").search(xml, start)
    assert m, xml
    return xml[:m.end()] + template + xml[m.end():]


def sign_xml(idp: SAMLIdP, xml: str, *, assertion: bool, response: bool, c14n: str = EXC,
             prefix_list: str | None = None) -> str:
    """Sign as the IdP would: the template right after Issuer, then xmlsec1."""
    sec = idp.server.sec
    cert = idp.keys.cert_b64.replace("\n", "")
    if assertion:
        m = re.search(r"<(?:\w+:)?Assertion\b[^>]*\bID=\"([^\"]+)\"", xml)
        assert m, xml
        xml = _insert_after_issuer(xml, m.start(), sig_template(m.group(1), cert, c14n, prefix_list))
        xml = sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", node_id=m.group(1))
    if response:
        m = re.search(r"<(?:\w+:)?Response\b[^>]*\bID=\"([^\"]+)\"", xml)
        assert m, xml
        xml = _insert_after_issuer(xml, m.start(), sig_template(m.group(1), cert, c14n, prefix_list))
        xml = sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:protocol:Response", node_id=m.group(1))
    return xml


def respond(idp: SAMLIdP, location: str, *, reshape: Callable[[str], str] | None = None, assertion: bool = True,
            response: bool = False, user: User | None = None, **kw: Any) -> dict[str, str]:
    req, relay = idp.parse_login(location)
    xml = idp.response_xml(req, user or User(), sign_assertion=False, sign_response=False)
    if reshape is not None:
        xml = reshape(xml)
    return form(sign_xml(idp, xml, assertion=assertion, response=response, **kw), relay)


def accepted(client, data, email: str | None = "alice@example.com") -> dict[str, Any]:
    resp = client.post("/sso/idp/acs", data=data)
    assert resp.status_code == 303, resp.data
    me = client.get("/me").get_json()
    if email is not None:
        assert me["email"] == email
    return me


def refused(client, data, failures, reason: str = "invalid_response") -> None:
    resp = client.post("/sso/idp/acs", data=data)
    assert resp.status_code == 400, resp.data
    assert failures and failures[-1]["reason"] == reason, failures


def attribute_statement(xml: str, body: str) -> str:
    """Replace the AttributeStatement with hand-written attributes (the IdP's own shape)."""
    m = re.search(r"<(\w+:)?AttributeStatement\b.*?</\1?AttributeStatement>", xml, re.DOTALL)
    assert m, xml
    p = m.group(1) or ""
    ns = "" if p else ' xmlns="urn:oasis:names:tc:SAML:2.0:assertion"'
    body = body.replace("<saml:", f"<{p}").replace("</saml:", f"</{p}")
    new = (f'<{p}AttributeStatement{ns} xmlns:xs="http://www.w3.org/2001/XMLSchema" '
           f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">{body}</{p}AttributeStatement>')
    return xml[:m.start()] + new + xml[m.end():]


def set_attr(xml: str, element: str, attr: str, value: str | None) -> str:
    """Set (or drop, with None) one attribute on the first <element ...>."""
    m = re.search(rf"<(?:\w+:)?{element}\b[^>]*?(/?)>", xml)
    assert m, (element, xml)
    tag = m.group(0)
    tag2 = re.sub(rf'\s{attr}="[^"]*"', "", tag)
    if value is not None:
        end = -2 if tag2.endswith("/>") else -1
        tag2 = tag2[:end] + f' {attr}="{value}"' + tag2[end:]
    return xml[:m.start()] + tag2 + xml[m.end():]


def iso(t: float, frac: str = "", z: str = "Z") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + frac + z


# ------------------------------------------------------------------------------ metadata

@pytest.mark.parametrize("name", ["adfs-metadata.xml", "entra-metadata.xml", "google-metadata.xml"])
def test_vendor_metadata_parses(idp, spare, name):
    md = parse_idp_metadata(render(name, idp, enc=spare[0], other=spare[1]).encode(), entity_id=None, now=time.time())
    b64 = idp.keys.cert_b64.replace("\n", "")
    assert md.entity_id == idp.entity_id
    # encryption keys are not signing keys; a KeyDescriptor without `use` is both
    assert set(md.signing_certs) == {b64} and spare[0] not in md.signing_certs
    assert md.sso_redirect == f"{idp.base}/sso/redirect"
    if name == "google-metadata.xml":
        assert md.slo_redirect is None
    else:
        assert md.slo_redirect == f"{idp.base}/slo/redirect"


@pytest.mark.parametrize("name", ["adfs-metadata.xml", "entra-metadata.xml", "google-metadata.xml"])
def test_sign_in_with_vendor_metadata(portal, idp, name):
    _app, client = portal(name)
    accepted(client, respond(idp, login(client)))


def test_federation_metadata_picks_idp_entity_id(portal, idp, spare):
    raw = render("federation-metadata.xml", idp, enc=spare[0], other=spare[1]).encode()
    with pytest.raises(MetadataError, match="idpEntityId"):
        parse_idp_metadata(raw, entity_id=None, now=time.time())
    md = parse_idp_metadata(raw, entity_id=idp.entity_id, now=time.time())
    assert md.signing_certs == (idp.keys.cert_b64.replace("\n", ""),)
    assert md.cache_duration == 6 * 3600
    other = parse_idp_metadata(raw, entity_id="https://other-idp.example.test/idp/shibboleth", now=time.time())
    assert other.signing_certs == (spare[1],)
    _app, client = portal("federation-metadata.xml", idpEntityId=idp.entity_id)
    accepted(client, respond(idp, login(client)))


def test_federation_metadata_without_idp_entity_id_is_a_config_error(make_app, idp, spare, tmp_path):
    path = tmp_path / "fed.xml"
    path.write_text(render("federation-metadata.xml", idp, enc=spare[0], other=spare[1]))
    block = {"provider": "saml", "idpMetadata": str(path), "spEntityId": SP_ENTITY}
    with pytest.raises(ConfigError) as exc:
        make_app({"auth": {"providers": {"idp": block}}, "session": {"cookieSecure": False}, "skills": SKILLS})
    assert "idpEntityId" in str(exc.value)


def test_federation_other_idp_cannot_sign_for_ours(portal, idp, failures, tmp_path, spare):
    """Trusting one entity of an aggregate: a response signed by another
    member's key (with our issuer) is refused."""
    _app, client = portal("federation-metadata.xml", idpEntityId=idp.entity_id)
    evil = SAMLIdP(str(tmp_path / "evil"), entity_id=idp.entity_id, cn="evil")
    evil.trust_sp(client.get("/sso/idp/metadata").data.decode())
    refused(client, respond(evil, login(client)), failures)


# ------------------------------------------------------------------------------ signatures

def test_google_default_assertion_signed_response_unsigned(portal, idp):
    _app, client = portal("google-metadata.xml")
    accepted(client, respond(idp, login(client), assertion=True, response=False))


def test_adfs_default_both_signed(portal, idp):
    _app, client = portal("adfs-metadata.xml", wantResponseSigned=True)
    accepted(client, respond(idp, login(client), assertion=True, response=True))


def test_okta_response_only_needs_want_response_signed(portal, idp, failures):
    # default settings (wantAssertionsSigned true): an unsigned assertion is refused
    _app, client = portal()
    refused(client, respond(idp, login(client), assertion=False, response=True), failures)
    _app, client = portal(wantResponseSigned=True, wantAssertionsSigned=False)
    accepted(client, respond(idp, login(client), assertion=False, response=True))
    # ... and with that setting, a response-unsigned message is refused
    refused(client, respond(idp, login(client), assertion=True, response=False), failures)


@pytest.mark.parametrize("c14n", [EXC, INC])
@pytest.mark.parametrize("where", ["assertion", "response", "both"])
def test_exclusive_c14n_accepted_inclusive_refused_before_xmlsec1(portal, idp, failures, c14n, where):
    """Google / ADFS / Okta / Entra / Keycloak sign with exclusive c14n. Inclusive
    c14n (a few Shibboleth setups) is refused by pysaml2 after xmlsec1 ran; the
    pre-scan refuses it first, with a message that names the fix."""
    over = {} if where == "assertion" else {"wantResponseSigned": True}
    if where == "response":
        over["wantAssertionsSigned"] = False
    _app, client = portal(**over)
    data = respond(idp, login(client), assertion=where != "response", response=where != "assertion", c14n=c14n)
    if c14n == EXC:
        accepted(client, data)
    else:
        resp = client.post("/sso/idp/acs", data=data)
        assert resp.status_code == 400 and b"exclusive c14n" in resp.data
        assert failures[-1]["reason"] == "invalid_response"


@pytest.mark.parametrize("prefixes", ["xs", "xs xsi", "#default saml ds xs xsi"])
def test_okta_shibboleth_inclusive_namespaces_prefix_list(portal, idp, prefixes):
    """Okta and Shibboleth put <ec:InclusiveNamespaces PrefixList="xs"/> in the exc-c14n transform."""
    _app, client = portal(wantResponseSigned=True)
    accepted(client, respond(idp, login(client), assertion=True, response=True, prefix_list=prefixes))


def test_transform_with_other_children_still_refused(portal, idp, failures):
    _app, client = portal()
    data = respond(idp, login(client), prefix_list="xs")
    xml = base64.b64decode(data["SAMLResponse"]).decode()
    bad = xml.replace('PrefixList="xs"/>', 'PrefixList="xs"/><ds:XPath>not(ancestor-or-self::x)</ds:XPath>', 1)
    assert bad != xml
    refused(client, {**data, "SAMLResponse": base64.b64encode(bad.encode()).decode()}, failures)
    # InclusiveNamespaces inside the enveloped-signature transform is not a thing: refused
    bad2 = re.sub(r'(<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature")/>',
                  rf'\1><ec:InclusiveNamespaces xmlns:ec="{EXC}" PrefixList="xs"/></ds:Transform>', xml, count=1)
    assert bad2 != xml
    refused(client, {**data, "SAMLResponse": base64.b64encode(bad2.encode()).decode()}, failures)


def test_tampered_after_signing_with_prefix_list_still_refused(portal, idp, failures):
    _app, client = portal()
    data = respond(idp, login(client), prefix_list="xs")
    xml = base64.b64decode(data["SAMLResponse"]).decode().replace("alice@example.com", "mallory@example.com")
    refused(client, {**data, "SAMLResponse": base64.b64encode(xml.encode()).decode()}, failures)


# ------------------------------------------------------------------------------ assertion contents

ATTRS = {
    # Entra / ADFS: claim URIs, NameFormat uri; groups one AttributeValue each
    "uri": f'''<saml:Attribute Name="{EMAIL_URI}" NameFormat="{URI_FMT}"><saml:AttributeValue>alice@example.com</saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="{NAME_URI}" NameFormat="{URI_FMT}"><saml:AttributeValue>Alice Example</saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="{GROUPS_URI}" NameFormat="{URI_FMT}"><saml:AttributeValue>database-admins</saml:AttributeValue><saml:AttributeValue>engineering</saml:AttributeValue></saml:Attribute>''',
    # Okta / Keycloak: basic names, xsi:type="xs:string", whitespace and newlines around values
    "basic": f'''<saml:Attribute Name="email" NameFormat="{BASIC_FMT}"><saml:AttributeValue xsi:type="xs:string">
        alice@example.com
      </saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="name" NameFormat="{BASIC_FMT}"><saml:AttributeValue xsi:type="xs:string"> Alice Example </saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="groups" NameFormat="{BASIC_FMT}"><saml:AttributeValue xsi:type="xs:string">database-admins</saml:AttributeValue><saml:AttributeValue xsi:type="xs:string">engineering</saml:AttributeValue></saml:Attribute>''',
    # Google: no NameFormat on its custom attributes (unspecified), names chosen by the admin
    "unspecified": f'''<saml:Attribute Name="email" NameFormat="{UNSPEC_FMT}"><saml:AttributeValue>alice@example.com</saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="name"><saml:AttributeValue>Alice Example</saml:AttributeValue></saml:Attribute>
<saml:Attribute Name="groups"><saml:AttributeValue>database-admins</saml:AttributeValue><saml:AttributeValue>engineering</saml:AttributeValue></saml:Attribute>''',
    # Shibboleth: urn:oid names with FriendlyName, mapped by FriendlyName
    "oid": f'''<saml:Attribute FriendlyName="mail" Name="urn:oid:0.9.2342.19200300.100.1.3" NameFormat="{URI_FMT}"><saml:AttributeValue xsi:type="xs:string">alice@example.com</saml:AttributeValue></saml:Attribute>
<saml:Attribute FriendlyName="displayName" Name="urn:oid:2.16.840.1.113730.3.1.241" NameFormat="{URI_FMT}"><saml:AttributeValue xsi:type="xs:string">Alice Example</saml:AttributeValue></saml:Attribute>
<saml:Attribute FriendlyName="isMemberOf" Name="urn:oid:1.3.6.1.4.1.5923.1.5.1.1" NameFormat="{URI_FMT}"><saml:AttributeValue xsi:type="xs:string">database-admins</saml:AttributeValue><saml:AttributeValue xsi:type="xs:string">engineering</saml:AttributeValue></saml:Attribute>''',
}
MAPS = {
    "uri": {"email": EMAIL_URI, "name": NAME_URI, "groups": GROUPS_URI},
    "basic": {"email": "email", "name": "name", "groups": "groups"},
    "unspecified": {"email": "email", "name": "name", "groups": "groups"},
    "oid": {"email": "mail", "name": "displayName", "groups": "isMemberOf"},
}


@pytest.mark.parametrize("shape", sorted(ATTRS))
def test_attribute_name_formats_multi_valued_groups_whitespace(portal, idp, shape):
    _app, client = portal(attributeMapping=MAPS[shape], scopesFromGroups={"database-admins": ["migration:write"]})
    me = accepted(client, respond(idp, login(client), reshape=lambda x: attribute_statement(x, ATTRS[shape]),
                                  response=True, assertion=True), email="alice@example.com")
    assert me["groups"] == ["database-admins", "engineering"]
    assert me["scopes"] == ["migration:write"]
    assert client.get("/migrations").status_code == 200


@pytest.mark.parametrize("fmt,value", [(NID_EMAIL, "alice@example.com"),
                                       (NID_PERSISTENT, "AAdzZWNyZXQxDWx1qv0WZXz0t3Gi7MpKMw=="),
                                       (NID_TRANSIENT, "_9c8d7e6f5a4b3c2d1e0f"),
                                       (NID_UNSPEC, "ALICE\\corp")])
def test_name_id_formats(portal, idp, fmt, value):
    _app, client = portal()

    def reshape(xml: str) -> str:
        return re.sub(r'(<(?:\w+:)?NameID\b)[^>]*>[^<]*<', lambda m: f'{m.group(1)} Format="{fmt}">{value}<', xml,
                      count=1)

    me = accepted(client, respond(idp, login(client), reshape=reshape))
    assert me["subject"] == value
    assert me["email"] == "alice@example.com"  # from the mapped attribute, whatever the NameID


def test_email_from_name_id_only_when_format_is_email(portal, idp):
    strip = lambda x: attribute_statement(x, ATTRS["uri"].split("\n", 1)[1])
    _app, client = portal()
    assert accepted(client, respond(idp, login(client), reshape=strip))["email"] == "alice@example.com"
    _app, client = portal()
    to_persistent = lambda x: re.sub(r'(<(?:\w+:)?NameID\b)[^>]*>[^<]*<',
                                     rf'\1 Format="{NID_PERSISTENT}">opaque-123<', strip(x), count=1)
    assert accepted(client, respond(idp, login(client), reshape=to_persistent), email=None)["email"] is None


def _times(now: float, *, frac: str = "", z: str = "Z", offset: float = 0.0,
           drop: tuple[str, ...] = (), session_end: float | None = None) -> Callable[[str], str]:
    """Rewrite every instant as an IdP with a clock ``offset`` seconds off would."""
    def reshape(xml: str) -> str:
        t = now + offset
        xml = re.sub(r'IssueInstant="[^"]*"', f'IssueInstant="{iso(t, frac, z)}"', xml)
        xml = set_attr(xml, "Conditions", "NotBefore", None if "cond_nb" in drop else iso(t - 5, frac, z))
        xml = set_attr(xml, "Conditions", "NotOnOrAfter", iso(t + 300, frac, z))
        xml = set_attr(xml, "SubjectConfirmationData", "NotOnOrAfter", iso(t + 300, frac, z))
        xml = set_attr(xml, "AuthnStatement", "AuthnInstant", iso(t - 2, frac, z))
        if session_end is not None:
            xml = set_attr(xml, "AuthnStatement", "SessionNotOnOrAfter", iso(session_end, frac, z))
        return xml
    return reshape


@pytest.mark.parametrize("frac,z", [("", "Z"), (".123", "Z"), (".1234567", "Z"), (".000", "Z")])
def test_instants_with_and_without_fractional_seconds(portal, idp, clock, frac, z):
    _app, client = portal()
    accepted(client, respond(idp, login(client), reshape=_times(clock.now, frac=frac, z=z)))


def test_conditions_without_not_before_and_session_not_on_or_after(portal, idp, clock):
    _app, client = portal()
    accepted(client, respond(idp, login(client), reshape=_times(clock.now, drop=("cond_nb",),
                                                                   session_end=clock.now + 8 * 3600)))


def test_session_not_on_or_after_in_the_past_refused(portal, idp, clock, failures):
    _app, client = portal()
    refused(client, respond(idp, login(client), reshape=_times(clock.now, session_end=clock.now - 120)),
            failures, "token_expired")


@pytest.mark.parametrize("offset", [-45, 45])
def test_idp_clock_within_clock_skew(portal, idp, clock, offset):
    _app, client = portal(clockSkew=60)
    accepted(client, respond(idp, login(client), reshape=_times(clock.now, offset=offset)))


def test_idp_clock_beyond_clock_skew_refused(portal, idp, clock, failures):
    _app, client = portal(clockSkew=60)
    # the assertion window starts 10 minutes ahead: not valid yet
    refused(client, respond(idp, login(client), reshape=_times(clock.now, offset=600)), failures)


def test_subject_confirmation_with_not_before_still_refused(portal, idp, clock, failures):
    _app, client = portal()
    reshape = lambda x: set_attr(x, "SubjectConfirmationData", "NotBefore", iso(clock.now - 5))
    refused(client, respond(idp, login(client), reshape=reshape), failures)


def test_entra_group_overage_claim_marks_groups_incomplete(portal, idp, failures):
    """Entra sends groups.link (a Graph URL) instead of the groups past 150: not "no groups"."""
    link = "http://schemas.microsoft.com/claims/groups.link"
    body = ATTRS["uri"].rsplit("\n", 1)[0] + (
        f'\n<saml:Attribute Name="{link}"><saml:AttributeValue>'
        'https://graph.windows.net/tenant/users/abc/getMemberObjects</saml:AttributeValue></saml:Attribute>')
    _app, client = portal(groupsTruncatedAttribute=link)
    data = respond(idp, login(client), reshape=lambda x: attribute_statement(x, body))
    assert client.post("/sso/idp/acs", data=data).status_code == 303
    resp = client.get("/migrations")
    assert resp.status_code == 403
    # an explicit "false" is not an overage
    body_false = ATTRS["uri"] + f'\n<saml:Attribute Name="{link}"><saml:AttributeValue>false</saml:AttributeValue></saml:Attribute>'
    _app, client = portal(groupsTruncatedAttribute=link, scopesFromGroups={"database-admins": ["migration:write"]})
    accepted(client, respond(idp, login(client), reshape=lambda x: attribute_statement(x, body_false)))
    assert client.get("/migrations").status_code == 200


def test_instant_with_zone_offset_refused(portal, idp, clock, failures):
    """SAML core 1.3.3: UTC with no zone. No IdP sends +00:00; pysaml2 refuses it."""
    _app, client = portal()
    resp = client.post("/sso/idp/acs", data=respond(idp, login(client), reshape=_times(clock.now, z="+00:00")))
    assert resp.status_code == 400
