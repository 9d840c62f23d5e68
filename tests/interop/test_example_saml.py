"""The example portal (example_app) signing in through a real SAML IdP.

``CCSSO_EXAMPLE_IDP=google`` makes the portal read its ``auth`` block from
``example_app/ccsso.google.json``. The IdP is pysaml2's own
``saml2.server.Server`` (tests/interop/saml_idp): it parses the portal's
AuthnRequest and builds a real, xmlsec1-signed Response, which the test
client POSTs to the portal's ACS -- the same hops a browser makes, through
the portal's own routes (``/sign-in`` -> chooser -> ``/sso/google/login`` ->
IdP -> ``/sso/google/acs`` -> the portal's pages -> sign-out).

No server is started: the IdP is called in-process and the portal is driven
through Flask's test client.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from example_app import HERE as EXAMPLE_DIR
from example_app import create_app
from flask_ccsso import signals
from flask_ccsso.testing import csrf_token_in
from tests.support.saml_idp import EMAIL_URI, GROUPS_URI, NAME_URI, SAMLIdP, User, decode_form, form

BASE = "http://localhost"   # the test client's host; acsUrl is built from CCSSO_EXAMPLE_BASE_URL
ACS = f"{BASE}/sso/google/acs"
SP_ENTITY = "https://portal.example.test/saml"

ALICE = User(email="alice@example.com", name="Alice Admin", groups=["database-admins", "engineering"])
BOB = User(email="bob@example.com", name="Bob Security", groups=["security-team", "engineering"])


def example_google_block() -> dict[str, Any]:
    with open(Path(EXAMPLE_DIR) / "ccsso.google.json") as fh:
        return json.load(fh)["auth"]["providers"]["google"]


# -------------------------------------------------------------------------- fixtures

@pytest.fixture
def portal(tmp_path: Path, idp: SAMLIdP, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The example app, CCSSO_EXAMPLE_IDP=google, trusting the real IdP's metadata file."""
    meta = idp.write_metadata(str(tmp_path / "google-idp-metadata.xml"))
    instance = tmp_path / "instance"
    monkeypatch.setenv("CCSSO_EXAMPLE_IDP", "google")
    monkeypatch.setenv("GOOGLE_SAML_METADATA", meta)
    monkeypatch.setenv("GOOGLE_SAML_SP_ENTITY_ID", SP_ENTITY)
    monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", BASE)
    monkeypatch.setenv("CCSSO_EXAMPLE_INSTANCE", str(instance))
    monkeypatch.setenv("SECRET_KEY", "example-saml-test")
    for var in ("CCSSO_EXAMPLE_MAX_AUTH_AGE", "CCSSO_DEVIDP_ENABLED", "CCSSO_TRUSTED_PROXIES"):
        monkeypatch.delenv(var, raising=False)
    # not TESTING: an unexpected exception must show up as the 500 a real deployment would serve
    app = create_app()
    try:
        assert app.config["CCSSO_EXAMPLE_IDP"] == "google"
        assert app.instance_path == str(instance)
        # the IdP learns the portal from the portal's own SP metadata (as an admin would upload it)
        sp_meta = app.test_client().get("/sso/google/metadata")
        assert sp_meta.status_code == 200, sp_meta.data
        text = sp_meta.data.decode()
        assert f'entityID="{SP_ENTITY}"' in text and f'Location="{ACS}"' in text, text
        idp.trust_sp(text)
        yield app
    finally:
        pipeline = app.extensions.get("ccsso_audit")
        if pipeline is not None:
            pipeline.close()


# -------------------------------------------------------------------------- helpers

def sign_in_location(client: Any, next_url: str = "/access") -> str:
    """Click the portal's sign-in, follow its redirects up to the IdP's SSO URL."""
    resp = client.get(f"/sign-in?next={next_url}")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/sso/login?"), resp.headers
    resp = client.get(resp.headers["Location"])   # the chooser: one provider, straight through
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/sso/google/login?"), resp.headers
    resp = client.get(resp.headers["Location"])
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def sign_in(client: Any, idp: SAMLIdP, user: User, next_url: str = "/access") -> None:
    location = sign_in_location(client, next_url)
    resp = client.post("/sso/google/acs", data=idp.respond(location, user))
    assert resp.status_code == 303, resp.data
    assert resp.headers["Location"] == next_url


def access_rows(client: Any) -> dict[str, str]:
    """``/access``: skill -> "yes" / "no" as the page shows it."""
    resp = client.get("/access")
    assert resp.status_code == 200, resp.data
    page = resp.data.decode()
    rows = dict(re.findall(r'<tr data-skill="([^"]+)">.*?<td class="(yes|no)">', page, re.DOTALL))
    assert set(rows) == {"database-migration", "security-audit", "infrastructure-deploy", "sso-operator"}, page
    return rows


def page_text(resp: Any) -> str:
    return html.unescape(re.sub(r"\s+", " ", resp.data.decode()))


def sign_out(client: Any, idp: SAMLIdP) -> None:
    """The header's Sign out button (POST /sso/logout with the page's CSRF token), then the IdP's
    single logout round trip."""
    token = csrf_token_in(client.get("/"))
    resp = client.post("/sso/logout", data={"csrf_token": token},
                       headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert resp.status_code == 303, resp.data
    location = resp.headers["Location"]
    if location.startswith(f"{idp.base}/slo/redirect?"):
        # the harness IdP publishes an SLO endpoint (Google does not): answer the LogoutRequest
        req, q = idp.parse_logout_request(location)
        assert req.issuer.text == SP_ENTITY
        back = idp.logout_response(req, q.get("RelayState"), f"{BASE}/sso/google/slo")
        resp = client.get(back[len(BASE):])
        assert resp.status_code == 302, resp.data
        location = resp.headers["Location"]
    assert urlsplit(location).path == "/sso/logged-out", location
    assert client.get(location).status_code == 200


def assert_signed_out(client: Any) -> None:
    resp = client.get("/access")
    assert resp.status_code in (302, 401), resp.status_code
    if resp.status_code == 302:
        assert "/sso/" in resp.headers["Location"] and "login" in resp.headers["Location"]
    assert client.get("/migrations").status_code in (302, 401)
    assert client.get("/security/audit").status_code in (302, 401)


# -------------------------------------------------------------------------- the config under test

def test_example_google_config_maps_the_attributes_google_is_told_to_send():
    """docs/google-workspace.md has the admin name the app attributes with these URIs."""
    block = example_google_block()
    assert block["provider"] == "saml"
    assert block["attributeMapping"] == {"email": EMAIL_URI, "name": NAME_URI, "groups": GROUPS_URI}
    assert block["scopesFromGroups"]["database-admins"] == ["migration:write"]
    assert block["scopesFromGroups"]["security-team"] == ["security:read"]


def test_authn_request_names_the_configured_acs_and_entity(portal, idp):
    client = portal.test_client()
    location = sign_in_location(client)
    q = parse_qs(urlsplit(location).query)
    assert "/access" not in q["RelayState"][0]   # an opaque key, not the next URL
    req, relay = idp.parse_login(location)       # the real IdP parses (and accepts) it
    assert req.issuer.text == SP_ENTITY
    assert req.assertion_consumer_service_url == ACS
    assert relay == q["RelayState"][0]


# -------------------------------------------------------------------------- the happy paths

def test_database_admin_signs_in_through_the_example_app(portal, idp):
    client = portal.test_client()
    seen: list[dict[str, Any]] = []

    def rec(sender: Any, **kw: Any) -> None:
        seen.append(kw)

    signals.user_logged_in.connect(rec)
    try:
        sign_in(client, idp, ALICE)
    finally:
        signals.user_logged_in.disconnect(rec)
    ident = seen[-1]["identity"]
    assert ident.provider == "google" and ident.subject == "alice@example.com"
    assert ident.email == "alice@example.com" and ident.name == "Alice Admin"
    assert ident.groups == {"database-admins", "engineering"} and ident.scopes == {"migration:write"}

    assert access_rows(client) == {"database-migration": "yes", "security-audit": "no",
                                   "infrastructure-deploy": "no", "sso-operator": "no"}
    access = page_text(client.get("/access"))
    assert "Groups: database-admins, engineering" in access and "Scopes: migration:write" in access
    assert "Alice Admin" in access

    resp = client.get("/migrations")
    assert resp.status_code == 200, resp.data
    assert "2026_11_18_split_accounts_table" in page_text(resp)

    resp = client.get("/security/audit")
    assert resp.status_code == 403
    text = page_text(resp)
    assert 'id="forbidden"' in text and "security-audit" in text   # the portal's own 403 page

    assert client.get("/deploy").status_code == 403

    home = page_text(client.get("/"))
    assert 'href="/migrations"' in home and 'href="/security/audit"' not in home

    api = client.get("/api/migrations", headers={"Accept": "application/json"})
    assert api.status_code == 200 and api.get_json()["caller"] == "alice@example.com"

    sign_out(client, idp)
    assert_signed_out(client)


def test_security_team_member_gets_the_opposite(portal, idp):
    client = portal.test_client()
    sign_in(client, idp, BOB, next_url="/security/audit")
    assert access_rows(client) == {"database-migration": "no", "security-audit": "yes",
                                   "infrastructure-deploy": "no", "sso-operator": "yes"}
    access = page_text(client.get("/access"))
    assert "Groups: engineering, security-team" in access and "Scopes: security:read" in access

    resp = client.get("/security/audit")
    assert resp.status_code == 200, resp.data
    text = page_text(resp)
    assert "Security audit" in text
    # the audit page reads the SQLite file in CCSSO_EXAMPLE_INSTANCE: bob's own sign-in is there
    assert "auth.login" in text and "bob@example.com" in text
    assert Path(portal.instance_path, "ccsso-audit.sqlite").exists()

    resp = client.get("/migrations")
    assert resp.status_code == 403 and "database-migration" in page_text(resp)
    api = client.get("/api/migrations", headers={"Accept": "application/json"})
    assert api.status_code == 403

    home = page_text(client.get("/"))
    assert 'href="/security/audit"' in home and 'href="/migrations"' not in home

    sign_out(client, idp)
    assert_signed_out(client)


def test_two_people_two_browsers_do_not_mix(portal, idp):
    alice, bob = portal.test_client(), portal.test_client()
    alice_loc = sign_in_location(alice)
    bob_loc = sign_in_location(bob)
    assert bob.post("/sso/google/acs", data=idp.respond(bob_loc, BOB)).status_code == 303
    assert alice.post("/sso/google/acs", data=idp.respond(alice_loc, ALICE)).status_code == 303
    assert alice.get("/migrations").status_code == 200 and alice.get("/security/audit").status_code == 403
    assert bob.get("/migrations").status_code == 403 and bob.get("/security/audit").status_code == 200
    sign_out(alice, idp)
    assert_signed_out(alice)
    assert bob.get("/security/audit").status_code == 200   # bob's session is untouched


# -------------------------------------------------------------------------- refused responses

def refused_page(resp: Any, failures: list[dict[str, Any]], reason: str) -> None:
    assert resp.status_code == 400, (resp.status_code, resp.data[:500])
    assert resp.mimetype == "text/html", resp.mimetype
    assert failures and failures[-1]["reason"] == reason, failures


def test_audience_changed_after_signing_is_a_400_page(portal, idp, failures):
    client = portal.test_client()
    data = idp.respond(sign_in_location(client), ALICE)
    xml = decode_form(data)
    assert f">{SP_ENTITY}<" in xml
    tampered = xml.replace(f">{SP_ENTITY}<", ">https://other-sp.example<")
    resp = client.post("/sso/google/acs", data=form(tampered, data["RelayState"]))
    # the pre-scan refuses a foreign audience before xmlsec1 runs (the signature would fail too)
    refused_page(resp, failures, "invalid_audience")
    assert_signed_out(client)


def test_trusted_idp_signing_another_audience_is_a_400_page(portal, idp, failures):
    client = portal.test_client()

    def other_audience(r: Any) -> None:
        r.assertion[0].conditions.audience_restriction[0].audience[0].text = "https://other-sp.example"

    data = idp.respond(sign_in_location(client), ALICE, mutate=other_audience)
    resp = client.post("/sso/google/acs", data=data)
    refused_page(resp, failures, "invalid_audience")
    assert_signed_out(client)


def test_groups_edited_after_signing_is_a_400_page(portal, idp, failures):
    client = portal.test_client()
    data = idp.respond(sign_in_location(client), BOB)
    tampered = decode_form(data).replace(">security-team<", ">database-admins<")
    resp = client.post("/sso/google/acs", data=form(tampered, data["RelayState"]))
    refused_page(resp, failures, "invalid_response")
    assert_signed_out(client)


def test_replayed_response_is_a_400_page(portal, idp, failures):
    first = portal.test_client()
    data = idp.respond(sign_in_location(first), ALICE)
    assert first.post("/sso/google/acs", data=data).status_code == 303
    other = portal.test_client()   # an attacker's browser, the captured form
    refused_page(other.post("/sso/google/acs", data=data), failures, "replayed")
    assert_signed_out(other)
    # and the same browser cannot post it twice either
    resp = first.post("/sso/google/acs", data=data)
    assert resp.status_code == 400, resp.status_code
    assert first.get("/migrations").status_code == 200   # the genuine session is still there


def test_garbage_saml_response_is_a_400_page(portal, failures):
    client = portal.test_client()
    resp = client.post("/sso/google/acs", data={"SAMLResponse": "not base64 at all %%%", "RelayState": "x"})
    assert resp.status_code == 400, (resp.status_code, resp.data[:500])
    resp = client.post("/sso/google/acs", data={})
    assert resp.status_code == 400, (resp.status_code, resp.data[:500])
