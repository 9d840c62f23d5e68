"""SAML single logout: only the octets whose signature was verified are
processed, a LogoutRequest ends only the sessions it names (NameID *and*
SessionIndex), LogoutResponses are signed (query signature on the redirect
binding, XML signature on POST), and every refused logout message is a 4xx
HTML page plus an audit event (``auth.login_failed``, detail ``SAML logout: ...``).

Every message comes from the harness IdP (pysaml2's ``Server``) and is
signed with its real key; the attacks are what a signed-in user can do with
the one LogoutRequest the IdP sends them for their own session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.security.saml_messages import (
    LOGOUT_RESPONSE,
    SLO,
    logout_request_path,
    logout_request_xml,
    logout_response_xml,
    post_form,
    raw_param,
    redirect_query,
    sp_logout_request,
    xml_signed,
)
from tests.support.saml import login, post
from tests.support.saml_idp import SAMLIdP, User

JSON = {"Accept": "application/json"}


def sign_in(app: Any, idp: SAMLIdP, email: str, session_index: str) -> Any:
    client = app.test_client()
    resp = post(client, idp.respond(login(client), User(email=email), session_index=session_index))
    assert resp.status_code == 303, resp.data
    assert signed_in(client)
    return client


def signed_in(client: Any) -> bool:
    return client.get("/me", headers=JSON).status_code == 200


def refused(resp: Any, failures: list[dict[str, Any]], reason: str | None = None) -> bool:
    """A 4xx HTML page, and an audit event saying it was a refused logout message."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.data)
    assert resp.mimetype == "text/html", resp.mimetype
    assert failures, "no audit event for the refused logout message"
    event = failures[-1]
    assert event["provider"] == "google" and event["detail"].startswith("SAML logout:"), event
    if reason is not None:
        assert event["reason"] == reason, event
    return True


@pytest.fixture
def two_users(saml_portal, idp):
    app, _ = saml_portal()
    alice = sign_in(app, idp, "alice@example.com", "sess-A")
    bob = sign_in(app, idp, "bob@example.com", "sess-B")
    return app, alice, bob


# ------------------------------------------------------------------ redirect binding: exact octets

@pytest.mark.parametrize("encoded", ["SAML%52equest", "%53AMLRequest", "SAMLReq%75est", "SAML%52%65quest",
                                     "%53%41%4D%4C%52%65%71%75%65%73%74"])
@pytest.mark.parametrize("forged_first", [True, False])
def test_encoded_name_cannot_carry_an_unsigned_request_beside_a_signed_one(two_users, idp, failures,
                                                                           encoded, forged_first):
    """Alice got a genuinely signed LogoutRequest for her own session. She
    adds a forged, unsigned one for Bob under a percent-encoded parameter
    name: the signature covers her message; Bob's must not be processed."""
    app, alice, bob = two_users
    legit = logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A"))
    forged = logout_request_path(None, logout_request_xml(idp, "bob@example.com", "sess-B"), relay=None)
    smuggled = f"{encoded}=" + raw_param(forged, "SAMLRequest")
    query = urlsplit(legit).query
    attack = "/sso/google/slo?" + (f"{smuggled}&{query}" if forged_first else f"{query}&{smuggled}")
    assert refused(app.test_client().get(attack), failures, "bad_request")
    assert signed_in(bob) and signed_in(alice)
    # the genuine message alone still does what it says, and only that
    assert app.test_client().get(legit).status_code == 302
    assert not signed_in(alice) and signed_in(bob)


@pytest.mark.parametrize("encoded", ["Sig%41lg", "Relay%53tate", "Signatur%65", "SAMLRequest+"])
def test_any_encoded_parameter_name_is_refused(two_users, idp, failures, encoded):
    app, alice, _bob = two_users
    legit = logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A"))
    assert refused(app.test_client().get(f"{legit}&{encoded}=x"), failures, "bad_request")
    assert signed_in(alice)


@pytest.mark.parametrize("repeat", ["SAMLRequest", "RelayState", "SigAlg", "Signature"])
def test_repeated_parameters_are_refused(two_users, idp, failures, repeat):
    app, alice, bob = two_users
    legit = logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A"))
    forged = logout_request_path(None, logout_request_xml(idp, "bob@example.com", "sess-B"))
    extra = f"{repeat}=" + (raw_param(forged, "SAMLRequest") if repeat == "SAMLRequest" else raw_param(legit, repeat))
    query = urlsplit(legit).query
    for attack in (f"/sso/google/slo?{extra}&{query}", f"/sso/google/slo?{query}&{extra}"):
        assert refused(app.test_client().get(attack), failures, "bad_request")
    assert signed_in(alice) and signed_in(bob)


def test_request_and_response_together_are_refused(two_users, idp, failures):
    app, alice, _bob = two_users
    legit = logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A"))
    forged = redirect_query(None, "SAMLResponse", "<x/>")
    assert refused(app.test_client().get(f"{legit}&{forged}"), failures, "bad_request")
    assert refused(app.test_client().get(f"/sso/google/slo?{forged}&{urlsplit(legit).query}"), failures)
    assert signed_in(alice)


def test_unsigned_or_foreign_signed_request_is_refused_and_audited(two_users, idp, failures):
    app, alice, bob = two_users
    xml = logout_request_xml(idp, "bob@example.com", "sess-B")
    assert refused(app.test_client().get(logout_request_path(None, xml)), failures)
    rogue = SAMLIdP(idp.directory + "-rogue", entity_id=idp.entity_id, base=idp.base, cn="rogue")
    assert refused(app.test_client().get(logout_request_path(rogue, xml)), failures)
    # signed, then the message changed (another user): the octets no longer match
    path = logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A"))
    swapped = path.replace(raw_param(path, "SAMLRequest"), raw_param(logout_request_path(None, xml), "SAMLRequest"))
    assert refused(app.test_client().get(swapped), failures)
    assert signed_in(bob) and signed_in(alice)


# ------------------------------------------------------------------ which sessions a request ends

def test_session_index_of_another_name_id_ends_nothing(two_users, idp):
    """Alice's genuinely signed LogoutRequest, carrying Bob's session index:
    the IdP said "Alice's session sess-B", which is no session at all."""
    app, alice, bob = two_users
    resp = app.test_client().get(logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-B")))
    assert resp.status_code == 302   # answered, as SAML asks, but ...
    assert signed_in(bob) and signed_in(alice)
    # ... Bob's index entry is still there: his own IdP logout still ends his session
    assert app.test_client().get(
        logout_request_path(idp, logout_request_xml(idp, "bob@example.com", "sess-B"))).status_code == 302
    assert not signed_in(bob) and signed_in(alice)


def test_without_session_index_ends_that_name_ids_sessions_only(two_users, idp, saml_portal):
    app, alice, bob = two_users
    alice2 = sign_in(app, idp, "alice@example.com", "sess-A2")
    resp = app.test_client().get(logout_request_path(idp, logout_request_xml(idp, "alice@example.com", None)))
    assert resp.status_code == 302
    assert not signed_in(alice) and not signed_in(alice2) and signed_in(bob)


def test_both_must_match(two_users, idp):
    app, alice, bob = two_users
    alice2 = sign_in(app, idp, "alice@example.com", "sess-A2")
    assert app.test_client().get(
        logout_request_path(idp, logout_request_xml(idp, "alice@example.com", "sess-A2"))).status_code == 302
    assert signed_in(alice) and not signed_in(alice2) and signed_in(bob)


# ------------------------------------------------------------------ LogoutResponses (answers to our requests)

@pytest.fixture
def pending(two_users, idp):
    """Alice's SP-initiated logout is under way: (app, the LogoutRequest we sent, its RelayState)."""
    app, _alice, _bob = two_users
    prov = app.extensions["ccsso"].providers["google"]
    with app.test_request_context():
        location = prov.logout_url({"name_id": "alice@example.com", "session_index": "sess-A"},
                                   "http://localhost/sso/logged-out")
    assert location and location.startswith(f"{idp.base}/slo/redirect?SAMLRequest=")
    request, relay = sp_logout_request(location)
    return app, request, relay


def test_unsigned_or_forged_redirect_logout_response_is_refused(pending, idp, failures):
    app, request, relay = pending
    xml = str(logout_response_xml(idp, request))
    client = app.test_client()
    assert refused(client.get("/sso/google/slo?" + redirect_query(None, "SAMLResponse", xml, relay)), failures)
    rogue = SAMLIdP(idp.directory + "-rogue", entity_id=idp.entity_id, base=idp.base, cn="rogue")
    assert refused(client.get("/sso/google/slo?" + redirect_query(rogue, "SAMLResponse", xml, relay)), failures)
    # a forgery does not use up the outstanding request: the IdP's real answer still lands
    resp = client.get("/sso/google/slo?" + redirect_query(idp, "SAMLResponse", xml, relay))
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/sso/logged-out")
    assert refused(client.get("/sso/google/slo?" + redirect_query(idp, "SAMLResponse", xml, relay)), failures,
                   "state_missing")


def test_unsigned_forged_or_tampered_post_logout_response_is_refused(pending, idp, failures):
    app, request, relay = pending
    client = app.test_client()
    form = {"content_type": "application/x-www-form-urlencoded"}
    unsigned = str(logout_response_xml(idp, request))
    assert refused(client.post("/sso/google/slo", data=post_form(unsigned, relay), **form), failures)
    rogue = SAMLIdP(idp.directory + "-rogue", entity_id=idp.entity_id, base=idp.base, cn="rogue")
    rogue.trust_sp(idp.sp_metadata or "")
    forged = xml_signed(rogue, logout_response_xml(rogue, request))
    assert refused(client.post("/sso/google/slo", data=post_form(forged, relay), **form), failures)
    genuine = xml_signed(idp, logout_response_xml(idp, request))
    tampered = genuine.replace("status:Success", "status:Requester")
    assert tampered != genuine
    assert refused(client.post("/sso/google/slo", data=post_form(tampered, relay), **form), failures)
    resp = client.post("/sso/google/slo", data=post_form(genuine, relay), **form)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/sso/logged-out"), resp.data


def test_post_logout_response_signature_must_be_the_roots(pending, idp, failures):
    """An unsigned LogoutResponse wrapping a genuinely signed one (signature
    wrapping): the signature that counts is the root's own, and there is none."""
    app, request, relay = pending
    genuine = xml_signed(idp, logout_response_xml(idp, request)).split("?>", 1)[-1].strip()
    outer = str(logout_response_xml(idp, request))
    close = outer.rindex("</")
    doc = outer[:close] + genuine + outer[close:]
    resp = app.test_client().post("/sso/google/slo", data=post_form(doc, relay),
                                  content_type="application/x-www-form-urlencoded")
    assert refused(resp, failures)


@pytest.mark.parametrize("change", ["issuer", "destination", "status"])
def test_signed_logout_response_is_checked(pending, idp, failures, change):
    app, request, relay = pending
    kw = {"issuer": {"issuer": "https://other-idp.example/saml"},
          "destination": {"destination": "https://evil.example/sso/google/slo"},
          "status": {"status": "urn:oasis:names:tc:SAML:2.0:status:Responder"}}[change]
    xml = str(logout_response_xml(idp, request, **kw))
    for resp in (app.test_client().get("/sso/google/slo?" + redirect_query(idp, "SAMLResponse", xml, relay)),
                 app.test_client().post("/sso/google/slo", data=post_form(xml_signed(idp, logout_response_xml(
                     idp, request, **kw)), relay), content_type="application/x-www-form-urlencoded")):
        assert refused(resp, failures, {"issuer": "issuer_mismatch", "destination": "invalid_response",
                                        "status": None}[change])


def test_logout_response_without_destination_is_refused(pending, idp, failures):
    app, request, relay = pending
    resp = logout_response_xml(idp, request)
    resp.destination = None
    query = redirect_query(idp, "SAMLResponse", str(resp), relay)
    assert refused(app.test_client().get("/sso/google/slo?" + query), failures)


def test_oversized_or_garbage_logout_messages_are_4xx_and_audited(saml_portal, idp, failures):
    app, _ = saml_portal(maxResponseSize=4096)
    client = app.test_client()
    assert refused(client.get("/sso/google/slo?SAMLRequest=%%%"), failures)
    assert refused(client.get("/sso/google/slo"), failures, "bad_request")
    assert refused(client.get("/sso/google/slo?SAMLRequest=\xff"), failures)
    big = "SAMLResponse=" + "A" * 100_000
    resp = client.post("/sso/google/slo", data=big, content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 413 and resp.mimetype == "text/html"
    assert failures[-1]["reason"] == "request_too_large" and failures[-1]["detail"].startswith("SAML logout:")
    resp = client.post("/sso/google/slo", data="{}", content_type="application/json")
    assert resp.status_code == 400 and failures[-1]["reason"] == "bad_request"   # a JSON post gets a JSON answer


def test_slo_url_constant_matches_the_portal(saml_portal):
    """The helpers build messages for http://localhost/sso/google/slo."""
    app, _client = saml_portal()
    with app.test_request_context():
        from flask import url_for

        assert url_for("ccsso.slo", provider="google", _external=True) == SLO
    assert LOGOUT_RESPONSE.endswith(":LogoutResponse")
