"""``acrValues`` are enforced whenever a skill sets them (issue 10, item 9).

Before, the skill's ``acrValues`` were compared with the session's ``acr``
only when the skill was also checked for age (``sensitive`` with
``requireReauthenticationForSensitive``, or ``maxAuthAge``), so a
single-factor session passed a skill whose config asked for MFA. Now a weak
(or missing) ``acr`` is a step-up whatever the other settings: browsers go
back to the IdP with ``acr_values`` (OIDC) / ``RequestedAuthnContext``
(SAML), a return that is still weak is refused, and API callers get the RFC
9470 challenge. A single-factor class listed in ``acrValues`` never counts as
MFA for ``requireMfa``.

Real parts: the LocalOP (tests/local_op.py) for OIDC sessions and bearer
tokens; pysaml2's IdP with xmlsec1 (tests/interop/saml_idp) for SAML.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_ccsso import requires_skill, signals
from flask_ccsso.testing import listen_to
from tests.support.oidc import authorize_params, oidc_config
from tests.support.saml import login, post
from tests.support.saml_idp import User
from tests.support.skills import JSON, access_token, bearer, sign_in
from tests.support.stepup import PPT, SAML_MFA, saml_stepup_app, step_up_location

MFA = "urn:ccsso:mfa"
LOA1 = "urn:ccsso:loa1"
GROUPS = ["devops-engineers"]

#: every way to set acrValues on a skill; each must refuse a single-factor session
ACR_SKILLS: dict[str, dict[str, Any]] = {
    "acr-only": {"allowedGroups": GROUPS, "acrValues": [MFA]},
    "acr-and-require-mfa": {"allowedGroups": GROUPS, "acrValues": [MFA], "requireMfa": True},
    "acr-sensitive-switch-off": {"allowedGroups": GROUPS, "acrValues": [MFA], "sensitive": True},
    "acr-max-age": {"allowedGroups": GROUPS, "acrValues": [MFA], "maxAuthAge": 600},
    "acr-no-groups": {"acrValues": [MFA]},
}
SKILLS: dict[str, dict[str, Any]] = {
    **ACR_SKILLS,
    "database-migration": {"allowedGroups": ["database-admins"]},  # conftest's app has a route for it
    # a single-factor class in acrValues must not satisfy requireMfa
    "mfa-with-weak-class": {"allowedGroups": GROUPS, "acrValues": [LOA1, MFA], "requireMfa": True},
}


def _app(make_app: Any, op: Any) -> Flask:
    cfg = oidc_config(op)
    cfg["skills"] = SKILLS
    # the switch that used to turn the acr check off together with the age check
    cfg["session"] = {"cookieSecure": False, "requireReauthenticationForSensitive": False}
    app = make_app(cfg)
    for name in SKILLS:
        if name == "database-migration":
            continue
        app.add_url_rule(f"/s/{name}", f"s_{name}", requires_skill(name)(lambda name=name: {"ok": name}))

    @app.get("/links")
    def links() -> str:
        return render_template_string("{% for n in names %}{{ n }}={{ has_skill(n) }};{% endfor %}", names=ACR_SKILLS)

    return app


@pytest.fixture
def app(make_app: Any, op: Any) -> Flask:
    return _app(make_app, op)


# --------------------------------------------------------------------------- browser sessions (OIDC)

@pytest.mark.parametrize("skill", sorted(ACR_SKILLS))
@pytest.mark.parametrize("claims", [
    {"acr": LOA1, "amr": ["pwd"]},            # single factor
    {"amr": ["pwd"]},                          # no acr at all
    {"acr": LOA1, "amr": ["pwd", "mfa"]},      # MFA by amr, but not the acr the skill asks for
    {"acr": MFA.upper(), "amr": ["pwd"]},      # near miss
])
def test_weak_session_is_sent_to_step_up_never_passed(app: Flask, op: Any, clock: Any, skill: str,
                                                      claims: dict[str, Any]) -> None:
    client = app.test_client()
    sign_in(client, op, clock, groups=GROUPS, **claims)
    with listen_to(signals.stepup_required) as asked, listen_to(signals.skill_invoked) as invoked:
        resp = client.get(f"/s/{skill}")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert invoked == [] and asked and asked[0].kwargs["acr_values"] == (MFA,)
    assert f"stepup={skill}" in resp.headers["Location"]
    # the login route asks the IdP for the acr
    authorize = authorize_params(client.get(resp.headers["Location"]).headers["Location"])
    assert authorize["acr_values"] == MFA and authorize["prompt"] == "login"
    # an API-style caller on the same session gets 401, not the resource
    api = client.get(f"/s/{skill}", headers=JSON)
    assert api.status_code == 401 and api.get_json()["error"] == "insufficient_acr"
    assert 'acr_values="urn:ccsso:mfa"' in api.headers["WWW-Authenticate"]
    # a template never shows it as held
    assert f"{skill}=False" in client.get("/links").get_data(as_text=True)


def test_step_up_round_trip_still_weak_is_refused_then_strong_passes(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    sign_in(client, op, clock, groups=GROUPS, acr=LOA1, amr=["pwd"])
    login_url = client.get("/s/acr-only").headers["Location"]
    idp_url = client.get(login_url).headers["Location"]
    with listen_to(signals.login_failed) as failed:
        # the IdP answers again with a single-factor sign-in
        sign_in(client, op, clock, url=idp_url, groups=GROUPS, acr=LOA1, amr=["pwd"], expect=400)
    assert failed and failed[0].kwargs["reason"] == "stepup_not_satisfied"
    assert client.get("/s/acr-only").status_code == 302  # the old session is still too weak
    idp_url = client.get(client.get("/s/acr-only").headers["Location"]).headers["Location"]
    with listen_to(signals.stepup_satisfied) as satisfied:
        resp = sign_in(client, op, clock, url=idp_url, groups=GROUPS, acr=MFA, amr=["pwd", "otp"])
    assert resp.headers["Location"] == "/s/acr-only" and satisfied[0].kwargs["skill"] == "acr-only"
    for skill in ACR_SKILLS:
        assert client.get(f"/s/{skill}").status_code == 200, skill


def test_single_factor_class_in_acr_values_is_not_mfa(app: Flask, op: Any, clock: Any) -> None:
    """``acrValues: [loa1, mfa]`` + ``requireMfa``: a loa1 sign-in meets the acr
    list but is still single-factor -- 403 mfa_required, not a pass."""
    client = app.test_client()
    sign_in(client, op, clock, groups=GROUPS, acr=LOA1, amr=["pwd"])
    resp = client.get("/s/mfa-with-weak-class", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["error"] == "mfa_required"
    strong = app.test_client()
    sign_in(strong, op, clock, groups=GROUPS, acr=MFA, amr=["pwd", "otp"])
    assert strong.get("/s/mfa-with-weak-class").status_code == 200


# --------------------------------------------------------------------------- bearer tokens

@pytest.mark.parametrize("acr", [None, LOA1, ""])
def test_bearer_token_without_the_acr_gets_the_rfc9470_challenge(app: Flask, op: Any, clock: Any,
                                                                  acr: str | None) -> None:
    token = access_token(op, clock, groups=GROUPS, acr=acr)
    for skill in ACR_SKILLS:
        with listen_to(signals.stepup_required) as asked:
            resp = app.test_client().get(f"/s/{skill}", headers=bearer(token))
        assert resp.status_code == 401, (skill, resp.get_data(as_text=True))
        www = resp.headers["WWW-Authenticate"]
        assert www.startswith('Bearer error="insufficient_user_authentication"')
        assert 'acr_values="urn:ccsso:mfa"' in www
        assert asked and asked[0].kwargs["via"] == "bearer"
    # no age requirement on an acr-only skill: the challenge asks for the acr only
    resp = app.test_client().get("/s/acr-only", headers=bearer(token))
    assert "max_age" not in resp.headers["WWW-Authenticate"] and resp.get_json()["error"] == "insufficient_acr"


def test_bearer_token_with_the_acr_passes(app: Flask, op: Any, clock: Any) -> None:
    token = access_token(op, clock, groups=GROUPS, acr=MFA, amr=["pwd", "otp"])
    for skill in ACR_SKILLS:
        assert app.test_client().get(f"/s/{skill}", headers=bearer(token)).status_code == 200, skill


# --------------------------------------------------------------------------- SAML sessions

def test_saml_password_session_steps_up_with_requested_authn_context(make_app: Any, idp: Any,
                                                                     tmp_path: Any) -> None:
    _app, client = saml_stepup_app(make_app, idp, tmp_path)
    assert post(client, idp.respond(login(client), User(), authn_class=PPT)).status_code == 303
    resp = client.get("/mfa-thing")
    assert resp.status_code == 302 and "stepup=mfa-thing" in resp.headers["Location"]
    location = client.get(resp.headers["Location"]).headers["Location"]
    req, _ = idp.parse_login(location)
    assert [c.text for c in req.requested_authn_context.authn_context_class_ref] == [SAML_MFA]
    assert req.force_authn == "true"
    # still PasswordProtectedTransport: refused, and the session stays too weak
    assert post(client, idp.respond(location, User(), authn_class=PPT)).status_code == 400
    assert client.get("/mfa-thing", headers=JSON).status_code == 401
    location = step_up_location(client, "/mfa-thing")
    assert post(client, idp.respond(location, User(), authn_class=SAML_MFA)).status_code == 303
    assert client.get("/mfa-thing").status_code == 200


# --------------------------------------------------------------------------- check-config

def _check(tmp_path: Any, op: Any, skills: dict[str, Any], session: dict[str, Any] | None = None,
           providers: dict[str, Any] | None = None, *args: str) -> Any:
    from tests.support.cli import make, oidc, run

    cfg = oidc(op)
    cfg["skills"] = skills
    cfg["session"].update(session or {})
    if providers is not None:
        cfg["auth"]["providers"] = providers
    return run(make(tmp_path, cfg), "check-config", *args)


def test_check_config_is_quiet_about_consistent_skills(tmp_path: Any, op: Any) -> None:
    result = _check(tmp_path, op, {"deploy": {"acrValues": [MFA], "requireMfa": True, "sensitive": True}})
    assert result.exit_code == 0, result.output
    assert "skills: no contradictory settings in 1 skill(s)" in result.output


def test_check_config_warns_require_mfa_with_single_factor_acr(tmp_path: Any, op: Any) -> None:
    result = _check(tmp_path, op, {"deploy": {"acrValues": [PPT, MFA], "requireMfa": True}})
    assert result.exit_code == 1, result.output
    assert "skill deploy: requireMfa is true, but acrValues lists single-factor class(es)" in result.output
    assert PPT in result.output


def test_check_config_warns_sensitive_that_asks_for_nothing(tmp_path: Any, op: Any) -> None:
    result = _check(tmp_path, op, {"deploy": {"sensitive": True}}, {"requireReauthenticationForSensitive": False})
    assert result.exit_code == 1, result.output
    assert "skill deploy: sensitive is true" in result.output and "never asks for a recent sign-in" in result.output
    # with its own maxAuthAge the skill is checked: nothing to say
    ok = _check(tmp_path, op, {"deploy": {"sensitive": True, "maxAuthAge": 300}},
                {"requireReauthenticationForSensitive": False})
    assert ok.exit_code == 0, ok.output


def test_check_config_warns_acr_the_idp_does_not_offer(tmp_path: Any, op: Any) -> None:
    op.extra_metadata["acr_values_supported"] = [LOA1]
    try:
        result = _check(tmp_path, op, {"deploy": {"acrValues": [MFA]}})
    finally:
        op.extra_metadata.pop("acr_values_supported")
    assert result.exit_code == 1, result.output
    assert "none of its acrValues (urn:ccsso:mfa) is in provider op's acr_values_supported" in result.output


def test_check_config_errors_on_scopes_a_saml_only_skill_can_never_have(tmp_path: Any, op: Any, idp: Any) -> None:
    from tests.support.saml import provider_block

    meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
    block = provider_block(meta, acsUrl="https://portal.example.com/sso/google/acs")
    result = _check(tmp_path, op, {"audit": {"requiredScopes": ["audit:read"], "providers": ["google"]}},
                    None, {"google": block}, "--offline")
    assert result.exit_code == 2, result.output
    assert "skill audit: requiredScopes audit:read can never be met" in result.output
    # the provider's scopesFromGroups grants migration:write: that one is fine
    ok = _check(tmp_path, op, {"db": {"requiredScopes": ["migration:write"]}}, None, {"google": block}, "--offline")
    assert "skill db" not in ok.output
