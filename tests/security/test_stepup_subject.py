"""A step-up answered by another account is refused; the session stays its person's (issue 14, item 12).

A step-up sends the signed-in person back to the IdP to sign in again. The
IdP answers for whoever completes its sign-in page: a colleague at the same
keyboard, a second account of the same person, an IdP session switched in
another tab. Before, that answer went through ``establish`` like any sign-in
and the browser's session silently became the other account's -- with the
fresh sign-in the sensitive skill asked for. Now the subject (provider +
``sub`` / NameID, and the tenant where both name one) must not change during
a step-up: ``400 stepup_subject_mismatch`` (HTML or JSON), ``login_failed``
in the audit trail (actor: the session's person; detail: the account that
answered), and the original session is left exactly as it was (same id, same
person, same sign-in time, still not fresh enough for the sensitive skill).

Signing in as someone else *without* a step-up still switches the session
(tests/sessions/test_signin_switch.py); so does it here, as a control.

Real parts: the LocalOP (tests/support/local_op.py) and the development IdP
of the example portal (its real sign-in form) for OIDC; pysaml2's IdP with
xmlsec1 signatures (tests/support/saml_idp.py) for SAML.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.gate.stepup import same_subject
from flask_ccsso.identity import Identity
from flask_ccsso.sessions import SESSION_KEY
from flask_ccsso.testing import listen_to
from tests.support.example import Portal, follow_sign_in, submit_idp_form
from tests.support.example import sign_in as portal_sign_in
from tests.support.saml import login as saml_login
from tests.support.saml import post
from tests.support.saml_idp import User
from tests.support.sessions import COOKIE
from tests.support.skills import JSON, add_skill_routes, sign_in, skills_config
from tests.support.stepup import PPT, SAML_MFA, saml_stepup_app, step_up_location

DEVOPS = ["devops-engineers"]


def _stored(app: Any, client: Any) -> dict[str, Any]:
    sid = client.get_cookie(COOKIE).value
    data = app.session_interface.read_sid(sid)
    assert data is not None, "the original session must still be stored"
    record = dict(data[SESSION_KEY])
    record.pop("last_seen", None)  # activity is recorded as the person browses (sliding expiration)
    return record


# --------------------------------------------------------------------------- OIDC (LocalOP)

@pytest.mark.parametrize("other", [
    {"sub": "u-bob", "email": "bob@example.com", "name": "Bob"},       # another person
    {"sub": "u-bob", "email": "alice@example.com", "name": "Alice Admin"},  # another account, same e-mail
])
def test_oidc_step_up_answered_by_another_account_is_refused(make_app: Any, op: Any, clock: Any,
                                                             other: dict[str, str]) -> None:
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, groups=DEVOPS)
    sid = client.get_cookie(COOKIE).value
    before = _stored(app, client)
    clock.advance(90)  # "quick" needs a sign-in within 60 s
    url = step_up_location(client, "/s/quick")
    with listen_to(signals.login_failed) as failed, listen_to(signals.user_logged_in) as logged_in, \
            listen_to(signals.stepup_satisfied) as satisfied:
        resp = sign_in(client, op, clock, url=url, groups=DEVOPS, expect=400, **other)
    body = resp.get_data(as_text=True)
    assert resp.mimetype == "text/html" and "different account" in body and "still signed in" in body
    # "Try again" asks for the step-up again from its page, never a plain sign-in (the IdP may hold bob's session)
    assert 'id="ccsso-retry" href="/s/quick"' in body and 'href="/sso/login' not in body
    # the refusal: announced once, the actor is the session's person, the answering account in the detail
    assert [f.kwargs["reason"] for f in failed] == [reasons.STEPUP_SUBJECT_MISMATCH]
    assert failed[0].kwargs["subject"] == "u-alice" and failed[0].kwargs["email"] == "alice@example.com"
    assert "op:u-bob" in failed[0].kwargs["detail"]
    assert logged_in == [] and satisfied == []
    # the original session: same id, same person, same record (not made fresh)
    assert client.get_cookie(COOKIE).value == sid
    assert _stored(app, client) == before
    assert client.get("/me").get_json()["subject"] == "u-alice"
    assert client.get("/s/quick", headers=JSON).status_code == 401  # still needs its step-up
    # the person themself completes the step-up
    url = step_up_location(client, "/s/quick")
    sign_in(client, op, clock, url=url, groups=DEVOPS, next_url="/s/quick")
    assert client.get("/s/quick").status_code == 200
    assert client.get("/me").get_json()["subject"] == "u-alice"


def test_oidc_step_up_refusal_as_json(make_app: Any, op: Any, clock: Any) -> None:
    from tests.support.oidc import authorize_params, callback

    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, groups=DEVOPS)
    clock.advance(90)
    url = step_up_location(client, "/s/quick")
    now = int(clock.now)
    claims = op.id_claims(authorize_params(url)["nonce"], iat=now, exp=now + 300, auth_time=now, groups=DEVOPS,
                          sub="u-mallory", email="mallory@example.com")
    resp = callback(client, op.issue_code(url, claims=claims), headers=JSON)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == reasons.STEPUP_SUBJECT_MISMATCH
    assert client.get("/me").get_json()["subject"] == "u-alice"


def test_plain_sign_in_as_someone_else_still_switches(make_app: Any, op: Any, clock: Any) -> None:
    """Control: without a step-up, signing in as another person is a switch (as before)."""
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, groups=DEVOPS)
    with listen_to(signals.login_failed) as failed:
        sign_in(client, op, clock, groups=DEVOPS, sub="u-bob", email="bob@example.com")
    assert failed == []
    assert client.get("/me").get_json()["subject"] == "u-bob"


def test_same_subject_rule() -> None:
    alice = Identity(subject="u-alice", provider="op", email="alice@example.com", tenant="t1")
    assert same_subject(alice, Identity(subject="u-alice", provider="op", email="new@example.com", tenant="t1"))
    assert same_subject(alice, Identity(subject="u-alice", provider="op"))  # no tenant on one side
    assert not same_subject(alice, Identity(subject="u-bob", provider="op", email="alice@example.com"))
    assert not same_subject(alice, Identity(subject="u-alice", provider="other"))
    assert not same_subject(alice, Identity(subject="u-alice", provider="op", tenant="t2"))


# --------------------------------------------------------------------------- OIDC (the dev IdP's sign-in form)

def _audit_events(portal: Portal) -> list[dict[str, Any]]:
    from flask_ccsso.audit import get_pipeline
    from flask_ccsso.audit.sinks.sqlalchemy import make_engine, tail

    settings = portal.app.extensions["ccsso"].audit_settings
    pipeline = get_pipeline(portal.app) or portal.app.extensions["ccsso"].audit
    assert pipeline is not None and pipeline.flush(timeout=10)
    engine = make_engine(settings.database_url)
    try:
        return tail(engine, settings.database_table, 200)
    finally:
        engine.dispose()


def test_dev_idp_step_up_signed_in_as_another_user_is_refused(example_portal: Portal) -> None:
    client = portal_sign_in(example_portal, "carol")
    assert client.get("/deploy").status_code == 200
    cookie = example_portal.app.config["SESSION_COOKIE_NAME"]
    sid = client.get_cookie(cookie, domain="127.0.0.1").value
    example_portal.clock.advance(1000)  # older than session.maxAuthAge (900 s)
    stale = client.get("/deploy")
    assert stale.status_code == 302 and "stepup=infrastructure-deploy" in stale.location
    to_idp = client.get(stale.location)
    page = client.get(to_idp.location)  # prompt=login: the IdP asks again although its session is alive
    assert page.status_code == 200 and "Sign in" in page.get_data(as_text=True)
    answer = submit_idp_form(client, page, "alice")  # someone else signs in at the IdP
    assert answer.status_code == 302 and "/sso/dev/callback" in answer.location
    with listen_to(signals.login_failed) as failed:
        refused = client.get(answer.location)
    assert refused.status_code == 400, refused.get_data(as_text=True)
    assert "different account" in refused.get_data(as_text=True)
    assert [f.kwargs["reason"] for f in failed] == [reasons.STEPUP_SUBJECT_MISMATCH]
    # still carol's session, still stale for the deploy page
    assert client.get_cookie(cookie, domain="127.0.0.1").value == sid
    home = client.get("/").get_data(as_text=True)
    assert 'id="who">Carol Devops<' in home
    assert "alice" not in home.lower()
    assert client.get("/deploy").status_code == 302
    # the audit trail has the refusal, with carol as the actor
    events = [e for e in _audit_events(example_portal) if e.get("type") == "auth.login_failed"]
    assert events and events[-1]["reason"] == reasons.STEPUP_SUBJECT_MISMATCH
    assert events[-1]["actor"]["email"] == "carol@example.com"
    # carol herself completes it
    landing = follow_sign_in(client, client.get("/deploy"), "carol")
    assert urlsplit(landing.location).path == "/deploy"
    assert client.get("/deploy").status_code == 200


# --------------------------------------------------------------------------- SAML (pysaml2 IdP)

@pytest.mark.parametrize("other", [
    User(email="mallory@example.com", name="Mallory"),
    User(email="Alice@Example.com", name="Alice Example"),  # another NameID (NameIDs compare exactly)
])
def test_saml_step_up_answered_with_another_name_id_is_refused(make_app: Any, idp: Any, tmp_path: Any,
                                                                other: User) -> None:
    app, client = saml_stepup_app(make_app, idp, tmp_path)
    assert post(client, idp.respond(saml_login(client), User(), authn_class=PPT)).status_code == 303
    sid = client.get_cookie(COOKIE).value
    before = _stored(app, client)
    location = step_up_location(client, "/mfa-thing")
    with listen_to(signals.login_failed) as failed, listen_to(signals.user_logged_in) as logged_in:
        resp = post(client, idp.respond(location, other, authn_class=SAML_MFA))
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert "different account" in resp.get_data(as_text=True)
    assert [f.kwargs["reason"] for f in failed] == [reasons.STEPUP_SUBJECT_MISMATCH]
    assert failed[0].kwargs["email"] == "alice@example.com"
    assert f"google:{other.email}" in failed[0].kwargs["detail"]
    assert logged_in == []
    assert client.get_cookie(COOKIE).value == sid and _stored(app, client) == before
    assert client.get("/me").get_json()["subject"] == "alice@example.com"
    assert client.get("/mfa-thing", headers=JSON).status_code == 401  # the step-up was not satisfied
    # the same person, strongly: accepted
    location = step_up_location(client, "/mfa-thing")
    assert post(client, idp.respond(location, User(), authn_class=SAML_MFA)).status_code == 303
    assert client.get("/mfa-thing").status_code == 200


def test_saml_plain_sign_in_as_someone_else_still_switches(make_app: Any, idp: Any, tmp_path: Any) -> None:
    _app, client = saml_stepup_app(make_app, idp, tmp_path)
    assert post(client, idp.respond(saml_login(client), User())).status_code == 303
    assert post(client, idp.respond(saml_login(client), User(email="bob@example.com"))).status_code == 303
    assert client.get("/me").get_json()["subject"] == "bob@example.com"
