"""Step-up for sensitive skills: browser round trip through the LocalOP, RFC 9470 for APIs."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.oidc import authorize_params, callback
from tests.support.skills import JSON, access_token, add_skill_routes, bearer, sign_in, skills_config


def _follow_to_idp(client, location):
    """Our step-up redirect → the login route → the IdP's authorize URL."""
    assert location.startswith("/sso/op/login?")
    resp = client.get(location)
    assert resp.status_code == 302
    return resp.headers["Location"]


def test_fresh_sign_in_is_enough(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    assert client.get("/s/prod-deploy").status_code == 200
    clock.advance(899)
    assert client.get("/s/prod-deploy").status_code == 200


def test_stale_browser_session_is_sent_back_to_idp_with_prompt_login_and_max_age(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(901)
    with listen_to(signals.stepup_required) as asked, listen_to(signals.permission_denied) as denied:
        resp = client.get("/s/prod-deploy?x=1")
    assert resp.status_code == 302
    loc = resp.headers["Location"]
    q = parse_qs(urlsplit(loc).query)
    assert q["stepup"] == ["prod-deploy"] and q["next"] == ["/s/prod-deploy?x=1"]
    assert asked[0].kwargs["skill"] == "prod-deploy" and asked[0].kwargs["max_age"] == 900 and asked[0].kwargs["via"] == "session"
    assert denied == []  # a step-up is its own outcome, not a 403
    authorize = authorize_params(_follow_to_idp(client, loc))
    assert authorize["prompt"] == "login" and authorize["max_age"] == "900"
    assert "acr_values" not in authorize


def test_stepup_round_trip_that_reauthenticates(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(1000)
    loc = client.get("/s/prod-deploy").headers["Location"]
    url = _follow_to_idp(client, loc)
    with listen_to(signals.stepup_satisfied) as satisfied, listen_to(signals.user_logged_in) as logged_in:
        resp = sign_in(client, op, clock, url=url, groups=["devops-engineers"])  # auth_time = now
    assert resp.headers["Location"] == "/s/prod-deploy"
    assert satisfied[0].kwargs["skill"] == "prod-deploy" and logged_in[0].kwargs["step_up"] is True
    assert client.get("/s/prod-deploy").status_code == 200


def test_stepup_round_trip_without_reauthentication_is_refused(client, op, clock):
    """The IdP answered with the old auth_time (it did not ask again): 400 stepup_not_satisfied."""
    sign_in(client, op, clock, groups=["devops-engineers"])
    old = clock.now
    clock.advance(1000)
    url = _follow_to_idp(client, client.get("/s/prod-deploy").headers["Location"])
    with listen_to(signals.login_failed) as failed:
        resp = sign_in(client, op, clock, url=url, groups=["devops-engineers"], auth_time=old, expect=400)
    assert failed[0].kwargs["reason"] == reasons.STEPUP_NOT_SATISFIED
    assert "stepup_not_satisfied" in resp.get_data(as_text=True)
    # the old session is still stale: still asked to step up
    assert client.get("/s/prod-deploy").status_code == 302


def test_stepup_round_trip_with_auth_time_missing_is_refused(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(1000)
    url = _follow_to_idp(client, client.get("/s/prod-deploy").headers["Location"])
    q = authorize_params(url)
    now = int(clock.now)
    claims = op.id_claims(q["nonce"], iat=now, exp=now + 300, groups=["devops-engineers"])
    claims.pop("auth_time")
    resp = callback(client, op.issue_code(url, claims=claims), headers=JSON)
    assert resp.status_code == 400 and resp.get_json()["error"] == reasons.STEPUP_NOT_SATISFIED


def test_stepup_with_acr_values(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"], acr="urn:ccsso:loa1")
    # fresh but the acr is too weak: step-up (not 403), asking for the acr
    resp = client.get("/s/prod-deploy-acr")
    assert resp.status_code == 302
    authorize = authorize_params(_follow_to_idp(client, resp.headers["Location"]))
    assert authorize["acr_values"] == "urn:ccsso:loa2" and authorize["prompt"] == "login"
    # the IdP came back with the weak acr again: refused
    weak = client.get("/s/prod-deploy-acr").headers["Location"]
    sign_in(client, op, clock, url=_follow_to_idp(client, weak), groups=["devops-engineers"],
            acr="urn:ccsso:loa1", expect=400)
    strong = client.get("/s/prod-deploy-acr").headers["Location"]
    sign_in(client, op, clock, url=_follow_to_idp(client, strong), groups=["devops-engineers"], acr="urn:ccsso:loa2")
    assert client.get("/s/prod-deploy-acr").status_code == 200


def test_skill_max_auth_age_overrides_session_default(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(61)
    resp = client.get("/s/quick")
    assert resp.status_code == 302
    authorize = authorize_params(_follow_to_idp(client, resp.headers["Location"]))
    assert authorize["max_age"] == "60"


def test_missing_auth_time_in_session_is_stale(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    with client.session_transaction() as sess:
        data = sess["_ccsso"]
        data["identity"]["auth_time"] = None
        sess["_ccsso"] = data
    assert client.get("/s/prod-deploy").status_code == 302


def test_no_step_up_for_a_skill_the_person_cannot_have(client, op, clock):
    sign_in(client, op, clock, groups=["staff"])
    clock.advance(1000)
    resp = client.get("/s/prod-deploy", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["condition"] == "allowedGroups"


def test_stale_session_api_client_gets_rfc9470_challenge(client, op, clock):
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(1000)
    resp = client.get("/s/prod-deploy", headers=JSON)
    assert resp.status_code == 401
    www = resp.headers["WWW-Authenticate"]
    assert www.startswith('Bearer error="insufficient_user_authentication"') and 'max_age="900"' in www
    body = resp.get_json()
    assert body["error"] == reasons.STALE_AUTHENTICATION and body["skill"] == "prod-deploy" and body["max_age"] == 900


def test_bearer_stepup_rfc9470(client, op, clock):
    tok = access_token(op, clock, groups=["devops-engineers"], auth_time=int(clock.now) - 2000)
    with listen_to(signals.stepup_required) as asked:
        resp = client.get("/s/prod-deploy-acr", headers=bearer(tok))
    assert resp.status_code == 401
    www = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_user_authentication"' in www
    assert 'max_age="900"' in www and 'acr_values="urn:ccsso:loa2"' in www
    assert asked[0].kwargs["via"] == "bearer" and asked[0].kwargs["acr_values"] == ("urn:ccsso:loa2",)
    fresh = access_token(op, clock, groups=["devops-engineers"], acr="urn:ccsso:loa2")
    assert client.get("/s/prod-deploy-acr", headers=bearer(fresh)).status_code == 200
    no_auth_time = access_token(op, clock, groups=["devops-engineers"], auth_time=None)
    assert client.get("/s/prod-deploy", headers=bearer(no_auth_time)).status_code == 401


@pytest.mark.parametrize("session, skill, stale_code", [
    ({}, "prod-deploy", 302),                                              # default: sensitive re-auths
    ({"requireReauthenticationForSensitive": False}, "prod-deploy", 200),  # switched off: sensitive alone asks nothing
    ({"requireReauthenticationForSensitive": False}, "quick", 302),        # explicit maxAuthAge always applies
    ({"maxAuthAge": 3600}, "prod-deploy", 200),                            # session default changes the age
])
def test_which_skills_are_checked(make_app, op, clock, session, skill, stale_code):
    app = add_skill_routes(make_app(skills_config(op, session=session)))
    client = app.test_client()
    sign_in(client, op, clock, groups=["devops-engineers"])
    clock.advance(1000)
    assert client.get(f"/s/{skill}").status_code == stale_code


def test_all_of_denial_wins_over_step_up(make_app, op, clock):
    from flask_ccsso.identity import Identity
    from flask_ccsso.skills import SkillPolicy

    app = make_app(skills_config(op))
    state = app.extensions["ccsso"]
    pol = SkillPolicy(state.config, state.providers, state.clock)
    ident = Identity(subject="s", provider="op", groups=frozenset({"devops-engineers"}), auth_time=clock.now - 5000)
    v = pol.decide(["prod-deploy", "security-audit"], ident, all_of=True)
    assert v.outcome == "denied" and v.decision.skill == "security-audit"
    v = pol.decide(["prod-deploy", "quick"], ident, all_of=True)
    assert v.outcome == "step_up" and v.decision.skill == "quick"
    v = pol.decide(["security-audit", "prod-deploy"], ident)
    assert v.outcome == "step_up" and v.decision.skill == "prod-deploy"
