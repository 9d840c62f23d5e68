"""Skills, bearer tokens and step-up against a real OpenID Provider (issue 4).

The portal is ``tests/conftest.py``'s ``make_app`` plus a few routes; the OP is
npm ``oidc-provider`` (``tests/interop/op``), driven by the headless
``Browser``. Browser callers sign in through the portal; API callers use the
JWT access token (``aud`` ``api://portal``, ``typ`` ``at+jwt``) that the OP
issues to a code exchange done here by hand.

Users at the OP: alice (database-admins, senior-developers; migration:write),
bob (security-team; security:read), carol (devops-engineers; infra:deploy),
dave (contractors), erin (senior-developers, no custom scope).

Time: the extension runs on the ``clock`` fixture, the OP on the wall clock.
oidc-provider's ``auth_time`` is whole seconds, so a test that needs a *newer*
``auth_time`` sleeps just over one second.
"""

from __future__ import annotations

import copy
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from flask import Flask

from flask_ccsso import current_identity, login_required, reasons, requires_skill, signals
from flask_ccsso.testing import listen_to
from tests.support.oidc import SKILLS

from .conftest import REDIRECT_URIS
from .op_harness import Browser, LoginFailed, RealOP, callback_params, pkce_pair
from .op_harness import LoginRequired as OPLoginRequired
from .test_oidc_interop import path_of, sign_in

ALL_SCOPES = ["openid", "profile", "email", "migration:write", "security:read", "infra:deploy"]
CALLBACK = REDIRECT_URIS[0]
MFA_ACR = "urn:ccsso:mfa"

#: every user's groups at the OP, to check that no response ever lists them
OP_GROUPS = ("database-admins", "senior-developers", "security-team", "devops-engineers", "contractors")

ROUTES = {  # path -> skill
    "/migrations": "database-migration",
    "/audit": "security-audit",
    "/deploy": "infrastructure-deploy",
}


def skills_config(**extra: dict[str, Any]) -> dict[str, Any]:
    skills = copy.deepcopy(SKILLS)
    skills["infrastructure-deploy"].update({"sensitive": True, "maxAuthAge": 60})
    skills.update(extra)
    return skills


def op_config(real_op: RealOP, skills: dict[str, Any] | None = None) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": real_op.client_id, "clientSecret": real_op.client_secret,
            "issuer": real_op.issuer, "scopes": ALL_SCOPES, "audience": "api://portal"}
    return {"auth": {"providers": {"op": prov}}, "skills": skills or skills_config(),
            "session": {"cookieSecure": False}}


def add_routes(app: Flask) -> Flask:
    """The seed's three skills on their own pages (``/migrations`` comes with
    make_app), plus ``/whoami`` for what the portal knows of the caller."""

    @app.get("/audit")
    @requires_skill("security-audit")
    def audit() -> str:
        return "audit ok"

    @app.get("/deploy")
    @requires_skill("infrastructure-deploy")
    def deploy() -> str:
        return "deploy ok"

    @app.get("/whoami")
    @login_required
    def whoami() -> dict[str, Any]:
        return {"subject": current_identity.subject, "via": current_identity.via,
                "auth_time": current_identity.auth_time, "acr": current_identity.acr,
                "amr": list(current_identity.amr), "groups": sorted(current_identity.groups),
                "scopes": sorted(current_identity.scopes)}

    return app


@pytest.fixture
def app(make_app: Any, real_op: RealOP) -> Flask:
    return add_routes(make_app(op_config(real_op)))


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


def signed_in(client: Any, browser: Browser, user: str, **kw: Any) -> dict[str, Any]:
    resp = sign_in(client, browser, user, **kw)
    assert resp.status_code == 302 and resp.headers["Location"] == "/me", resp.data
    who = client.get("/whoami").get_json()
    assert who["subject"] == f"u-{user}" and who["via"] == "session"
    return who


def op_tokens(real_op: RealOP, user: str, *, client: str = "portal", mfa: bool = False,
              scope: str = " ".join(ALL_SCOPES)) -> dict[str, Any]:
    """A code exchange done by hand (PKCE), as an API client of the OP would:
    the token response, whose access token is the OP's RFC 9068 JWT."""
    verifier, challenge = pkce_pair()
    client_id = real_op.client_id if client == "portal" else real_op.other_client_id
    with Browser(real_op) as browser:
        cb = browser.login(real_op.authorize_url(CALLBACK, scope=scope, client_id=client_id,
                                                 code_challenge=challenge), user, mfa=mfa)
    code = callback_params(cb)["code"]
    resp = real_op.token_request({"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                  "code_verifier": verifier}, client=client)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_denied_json(resp: Any, skill: str, condition: str, reason: str) -> None:
    assert resp.status_code == 403, resp.data
    body = resp.get_json()
    assert body["skill"] == skill and body["condition"] == condition and body["error"] == reason, body
    assert f"'{skill}'" in body["error_description"]
    assert_no_groups(resp)


def assert_no_groups(resp: Any) -> None:
    text = resp.get_data(as_text=True)
    for group in OP_GROUPS:
        assert group not in text, (group, text)


# ------------------------------------------------------------------ browser sessions

#: (user, path, expected): who holds which of the seed's skills
MATRIX = [
    ("alice", "/migrations", 200), ("alice", "/audit", 403), ("alice", "/deploy", 403),
    ("bob", "/migrations", 403), ("bob", "/audit", 200), ("bob", "/deploy", 403),
    ("carol", "/migrations", 403), ("carol", "/audit", 403), ("carol", "/deploy", 200),
    ("dave", "/migrations", 403), ("dave", "/audit", 403), ("dave", "/deploy", 403),
    ("erin", "/migrations", 403), ("erin", "/audit", 403), ("erin", "/deploy", 403),
]


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "dave", "erin"])
def test_browser_session_skill_matrix(client, op_browser, user):
    signed_in(client, op_browser, user)
    for who, path, expected in MATRIX:
        if who != user:
            continue
        skill = ROUTES[path]
        with listen_to(signals.skill_invoked) as invoked, listen_to(signals.permission_denied) as denied:
            resp = client.get(path)
        assert resp.status_code == expected, (user, path, resp.data)
        if expected == 200:
            assert invoked[-1].kwargs["skill"] == skill and invoked[-1].kwargs["via"] == "session"
            assert denied == []
        else:
            # an HTML page naming the skill and the reason code, never the groups
            assert resp.mimetype == "text/html"
            page = resp.get_data(as_text=True)
            assert f"&#39;{skill}&#39;" in page or f"'{skill}'" in page
            assert_no_groups(resp)
            assert denied[-1].kwargs["skill"] == skill and denied[-1].kwargs["via"] == "session"


@pytest.mark.parametrize("user,path,condition,reason", [
    # not in any allowed group: the first failing condition is the group
    ("alice", "/audit", "allowedGroups", reasons.MISSING_GROUP),
    ("dave", "/migrations", "allowedGroups", reasons.MISSING_GROUP),
    # erin is in senior-developers (allowed) but the OP did not grant migration:write
    ("erin", "/migrations", "requiredScopes", reasons.MISSING_SCOPE),
    # a denial comes before freshness: nobody is sent to re-authenticate for a skill they cannot have
    ("bob", "/deploy", "allowedGroups", reasons.MISSING_GROUP),
])
def test_browser_denial_json_names_skill_and_condition(client, op_browser, user, path, condition, reason):
    signed_in(client, op_browser, user)
    resp = client.get(path, headers={"Accept": "application/json"})
    assert_denied_json(resp, ROUTES[path], condition, reason)


def test_session_identity_reflects_real_op_claims(client, op_browser):
    who = signed_in(client, op_browser, "erin")
    assert who["groups"] == ["senior-developers"]
    assert not {"migration:write", "security:read", "infra:deploy"} & set(who["scopes"])
    assert who["acr"] == "urn:ccsso:loa1" and who["amr"] == ["pwd"]
    assert isinstance(who["auth_time"], float) and abs(who["auth_time"] - time.time()) < 60


# ------------------------------------------------------------------ bearer callers

@pytest.mark.parametrize("user,path,expected", [
    ("alice", "/migrations", 200), ("alice", "/audit", 403),
    ("bob", "/audit", 200), ("bob", "/migrations", 403),
    ("erin", "/migrations", 403),
    ("dave", "/migrations", 403), ("dave", "/deploy", 403),
])
def test_bearer_token_from_real_op(client, real_op, user, path, expected):
    tokens = op_tokens(real_op, user)
    with listen_to(signals.skill_invoked) as invoked:
        resp = client.get(path, headers=bearer(tokens["access_token"]))
    assert resp.status_code == expected, resp.data
    if expected == 200:
        assert invoked[-1].kwargs["via"] == "bearer"
    else:
        body = resp.get_json()
        assert body["skill"] == ROUTES[path] and body["condition"] in ("allowedGroups", "requiredScopes")
        assert_no_groups(resp)
    # no cookie-backed session was created for the API caller
    assert client.get_cookie("ccsso_session") is None


def test_bearer_identity_comes_from_the_access_token(client, real_op):
    tokens = op_tokens(real_op, "carol")
    who = client.get("/whoami", headers=bearer(tokens["access_token"])).get_json()
    assert who["via"] == "bearer" and who["subject"] == "u-carol"
    assert who["groups"] == ["devops-engineers"]
    assert "infra:deploy" in who["scopes"] and "migration:write" not in who["scopes"]


def test_bearer_denial_reason_for_missing_scope(client, real_op):
    tokens = op_tokens(real_op, "erin")
    resp = client.get("/migrations", headers=bearer(tokens["access_token"]))
    assert_denied_json(resp, "database-migration", "requiredScopes", reasons.MISSING_SCOPE)


def test_bearer_token_without_the_scope_asked_for(client, real_op):
    """alice is in the group, but this token was not issued with migration:write."""
    tokens = op_tokens(real_op, "alice", scope="openid profile email")
    resp = client.get("/migrations", headers=bearer(tokens["access_token"]))
    assert_denied_json(resp, "database-migration", "requiredScopes", reasons.MISSING_SCOPE)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')  # RFC 6750 3.1


def _assert_invalid_token(resp: Any) -> None:
    assert resp.status_code == 401, resp.data
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, challenge
    assert resp.get_json()["error"] == reasons.INVALID_TOKEN


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    return ".".join((head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]))


@pytest.mark.parametrize("kind", ["garbage", "not-a-jwt-shape", "bad-signature", "id-token", "other-client-id-token"])
def test_bad_bearer_tokens_are_401_invalid_token(client, real_op, kind):
    if kind == "garbage":
        token = "garbage"
    elif kind == "not-a-jwt-shape":
        token = "a.b.c"
    else:
        tokens = op_tokens(real_op, "alice", client="other" if kind == "other-client-id-token" else "portal")
        token = _tamper(tokens["access_token"]) if kind == "bad-signature" else tokens["id_token"]
    with listen_to(signals.login_failed) as failed:
        resp = client.get("/migrations", headers=bearer(token))
    _assert_invalid_token(resp)
    assert [r.kwargs["reason"] for r in failed] == [reasons.INVALID_TOKEN]


def test_expired_access_token_is_401(client, real_op, clock):
    tokens = op_tokens(real_op, "alice")
    assert client.get("/migrations", headers=bearer(tokens["access_token"])).status_code == 200
    # the OP's access tokens live 3600 s; past exp + clockSkew (60 s) per the extension's clock
    clock.advance(3600 + 61 + 5)
    with listen_to(signals.login_failed) as failed:
        resp = client.get("/migrations", headers=bearer(tokens["access_token"]))
    _assert_invalid_token(resp)
    assert "expired" in (failed[0].kwargs["detail"] or "")


def test_access_token_of_another_client_for_our_audience(client, real_op):
    """The OP issues every access token for the resource api://portal, also to
    the ``other`` client. RFC 9068 4: the resource server checks that ``aud``
    names it, not which client asked -- so such a token is accepted (its
    identity still has to hold the skill). Pinned here so that a change to
    this (an ``azp`` / ``client_id`` allow-list) is a deliberate one."""
    tokens = op_tokens(real_op, "alice", client="other")
    resp = client.get("/whoami", headers=bearer(tokens["access_token"]))
    assert resp.status_code == 200 and resp.get_json()["via"] == "bearer"


def test_allowed_clients_refuses_another_clients_access_token(make_app, real_op):
    """``allowedClients`` narrows RFC 9068's rule: only our own client's tokens."""
    cfg = op_config(real_op)
    cfg["auth"]["providers"]["op"]["allowedClients"] = [real_op.client_id]
    client = add_routes(make_app(cfg)).test_client()
    other = op_tokens(real_op, "alice", client="other")
    resp = client.get("/whoami", headers=bearer(other["access_token"]))
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_token"
    ours = op_tokens(real_op, "alice")
    assert client.get("/whoami", headers=bearer(ours["access_token"])).status_code == 200


def test_bearer_token_wins_over_a_session_cookie(client, real_op, op_browser):
    signed_in(client, op_browser, "alice")
    assert client.get("/migrations").status_code == 200
    bob = op_tokens(real_op, "bob")
    resp = client.get("/migrations", headers=bearer(bob["access_token"]))
    assert resp.status_code == 403 and resp.get_json()["skill"] == "database-migration"


# ------------------------------------------------------------------ step-up (browser)

def _stale_for_deploy(client: Any, clock: Any, age: float) -> str:
    """Move the extension's clock so that the sign-in is ``age`` s old; GET
    /deploy; return our step-up redirect."""
    auth_time = client.get("/whoami").get_json()["auth_time"]
    clock.now = auth_time + age
    with listen_to(signals.stepup_required) as asked, listen_to(signals.permission_denied) as denied:
        resp = client.get("/deploy?env=prod")
    assert resp.status_code == 302, resp.data
    assert denied == [] and asked[0].kwargs["skill"] == "infrastructure-deploy"
    assert asked[0].kwargs["max_age"] == 60
    return str(resp.headers["Location"])


def _to_op(client: Any, stepup_location: str) -> str:
    parts = urlsplit(stepup_location)
    assert parts.path == "/sso/op/login", stepup_location
    q = parse_qs(parts.query)
    assert q["stepup"] == ["infrastructure-deploy"] and q["next"] == ["/deploy?env=prod"]
    resp = client.get(stepup_location)
    assert resp.status_code == 302
    return str(resp.headers["Location"])


def test_step_up_forces_reauthentication_at_real_op(client, op_browser, clock):
    first = signed_in(client, op_browser, "carol")
    assert client.get("/deploy").status_code == 200  # fresh enough right after sign-in
    # a sign-in 60.5 s old (limit 60): the extension's clock moves, the OP's does not
    idp_url = _to_op(client, _stale_for_deploy(client, clock, 60.5))
    assert idp_url.startswith(op_browser.issuer)
    q = parse_qs(urlsplit(idp_url).query)
    assert q["prompt"] == ["login"] and q["max_age"] == ["60"]
    time.sleep(1.1)  # oidc-provider's auth_time has one-second resolution
    # the OP really shows its login form again (not a silent session reuse)
    with pytest.raises(OPLoginRequired):
        op_browser.authorize_silently(idp_url)
    callback_url = op_browser.login(idp_url, "carol")
    with listen_to(signals.stepup_satisfied) as satisfied:
        resp = client.get(path_of(callback_url))
    assert resp.status_code == 302 and resp.headers["Location"] == "/deploy?env=prod", resp.data
    assert satisfied and satisfied[0].kwargs["skill"] == "infrastructure-deploy"
    # the original page works now, with a newer auth_time
    assert client.get("/deploy?env=prod").status_code == 200
    assert client.get("/whoami").get_json()["auth_time"] > first["auth_time"]


def _without(url: str, *names: str) -> str:
    parts = urlsplit(url)
    q = [(k, v) for k, vs in parse_qs(parts.query, keep_blank_values=True).items() for v in vs if k not in names]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(q), ""))


@pytest.mark.parametrize("age", [60.5, 300.0])
def test_step_up_round_trip_without_reauthentication_is_refused(client, op_browser, clock, age):
    """The OP is asked without prompt=login / max_age (a tampered or careless
    IdP): it reuses its session and returns the old auth_time. The pending
    state demanded a re-authentication, so the callback is refused."""
    first = signed_in(client, op_browser, "carol")
    idp_url = _to_op(client, _stale_for_deploy(client, clock, age))
    time.sleep(1.1)  # a re-authentication would now give a newer auth_time
    silent = op_browser.authorize_silently(_without(idp_url, "prompt", "max_age"))
    with listen_to(signals.login_failed) as failed, listen_to(signals.stepup_satisfied) as satisfied:
        resp = client.get(path_of(silent), headers={"Accept": "application/json"})
    assert resp.status_code == 400, resp.data
    assert resp.get_json()["error"] == reasons.STEPUP_NOT_SATISFIED
    assert failed[0].kwargs["reason"] == reasons.STEPUP_NOT_SATISFIED and satisfied == []
    # the old session is kept, and is still too old for the sensitive skill
    who = client.get("/whoami").get_json()
    assert who["auth_time"] == first["auth_time"]
    resp = client.get("/deploy?env=prod")
    assert resp.status_code == 302 and "stepup=infrastructure-deploy" in resp.headers["Location"]


def test_step_up_is_not_asked_of_someone_without_the_skill(client, op_browser, clock):
    signed_in(client, op_browser, "dave")
    clock.advance(3000)
    resp = client.get("/deploy")
    assert resp.status_code == 403  # not a trip to the IdP for a skill dave can never have


# ------------------------------------------------------------------ step-up (API)

def test_rfc9470_challenge_for_a_real_bearer_token(client, real_op, clock):
    """The OP's RFC 9068 access tokens carry no ``auth_time`` (oidc-provider
    leaves it out), so a sensitive skill cannot be satisfied by them: the
    sign-in time is unknown, never read as "just now" -- and once the
    extension's clock is far ahead, it is old by any reading."""
    tokens = op_tokens(real_op, "carol")
    for advance in (0, 600):
        clock.advance(advance)
        with listen_to(signals.stepup_required) as asked:
            resp = client.get("/deploy", headers=bearer(tokens["access_token"]))
        assert resp.status_code == 401, resp.data
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer error="insufficient_user_authentication"'), challenge
        assert 'max_age="60"' in challenge
        body = resp.get_json()
        assert body["error"] == reasons.STALE_AUTHENTICATION and body["skill"] == "infrastructure-deploy"
        assert body["max_age"] == 60
        assert asked[0].kwargs["via"] == "bearer"
    # the same token still serves a non-sensitive request (it is valid, just not fresh)
    assert client.get("/whoami", headers=bearer(tokens["access_token"])).status_code == 200


def test_rfc9470_challenge_for_a_json_session_client(client, op_browser, clock):
    signed_in(client, op_browser, "carol")
    auth_time = client.get("/whoami").get_json()["auth_time"]
    clock.now = auth_time + 120
    resp = client.get("/deploy", headers={"Accept": "application/json"})
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge and 'max_age="60"' in challenge


# ------------------------------------------------------------------ requireMfa / acrValues

def mfa_app(make_app: Any, real_op: RealOP) -> Flask:
    skills = skills_config(**{
        # MFA by amr (the OP sends ["pwd", "otp"]) or by acr in acrValues; no freshness
        "mfa-audit": {"allowedGroups": ["security-team"], "requireMfa": True, "acrValues": [MFA_ACR]},
        # freshness-checked with acrValues: a weaker acr is a step-up, asking the OP for acr_values
        "mfa-deploy": {"allowedGroups": ["devops-engineers"], "requiredScopes": ["infra:deploy"],
                       "maxAuthAge": 600, "acrValues": [MFA_ACR], "requireMfa": True},
    })
    app = add_routes(make_app(op_config(real_op, skills)))

    @app.get("/mfa-audit")
    @requires_skill("mfa-audit")
    def mfa_audit() -> str:
        return "mfa audit ok"

    @app.get("/mfa-deploy")
    @requires_skill("mfa-deploy")
    def mfa_deploy() -> str:
        return "mfa deploy ok"

    return app


@pytest.mark.parametrize("mfa,expected", [(False, 401), (True, 200)])
def test_require_mfa_with_the_real_ops_acr_and_amr(make_app, real_op, op_browser, mfa, expected):
    """A single-factor sign-in never passes a skill with acrValues: the
    client is challenged to step up with the skill's acr_values."""
    client = mfa_app(make_app, real_op).test_client()
    who = signed_in(client, op_browser, "bob", mfa=mfa)
    assert who["acr"] == (MFA_ACR if mfa else "urn:ccsso:loa1")
    resp = client.get("/mfa-audit", headers={"Accept": "application/json"})
    assert resp.status_code == expected, resp.data
    if expected == 401:
        body = resp.get_json()
        assert body["error"] == reasons.INSUFFICIENT_ACR and body["acr_values"] == [MFA_ACR]
    assert client.get("/audit").status_code == 200  # the plain skill does not care


def test_acr_values_step_up_at_the_real_op(make_app, real_op, op_browser):
    client = mfa_app(make_app, real_op).test_client()
    signed_in(client, op_browser, "carol", mfa=False)
    resp = client.get("/mfa-deploy")
    assert resp.status_code == 302 and "stepup=mfa-deploy" in resp.headers["Location"]
    idp_url = client.get(resp.headers["Location"]).headers["Location"]
    q = parse_qs(urlsplit(idp_url).query)
    assert q["acr_values"] == [MFA_ACR] and q["prompt"] == ["login"] and q["max_age"] == ["600"]
    # the OP insists on the second factor ...
    with pytest.raises(LoginFailed, match="Multi-factor"):
        op_browser.login(idp_url, "carol", mfa=False)
    # ... and with it the portal accepts the step-up
    callback_url = op_browser.login(idp_url, "carol", mfa=True)
    with listen_to(signals.stepup_satisfied) as satisfied:
        assert client.get(path_of(callback_url)).status_code == 302
    assert satisfied[0].kwargs["skill"] == "mfa-deploy"
    assert client.get("/whoami").get_json()["acr"] == MFA_ACR
    assert client.get("/mfa-deploy").status_code == 200


def test_acr_values_round_trip_with_a_weaker_acr_is_refused(make_app, real_op, op_browser):
    """The portal asked for acr_values=urn:ccsso:mfa; an answer carrying
    urn:ccsso:loa1 (acr_values dropped on the way) is not a step-up."""
    client = mfa_app(make_app, real_op).test_client()
    signed_in(client, op_browser, "carol", mfa=False)
    idp_url = client.get(client.get("/mfa-deploy").headers["Location"]).headers["Location"]
    callback_url = op_browser.login(_without(idp_url, "acr_values"), "carol", mfa=False)
    resp = client.get(path_of(callback_url), headers={"Accept": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"] == reasons.STEPUP_NOT_SATISFIED
    assert client.get("/mfa-deploy", headers={"Accept": "application/json"}).status_code == 401


def test_require_mfa_for_bearer_tokens_without_acr(client, real_op, make_app):
    """The OP's access tokens carry neither acr nor amr: requireMfa cannot pass
    by bearer token, even after an MFA sign-in."""
    mclient = mfa_app(make_app, real_op).test_client()
    tokens = op_tokens(real_op, "bob", mfa=True)
    resp = mclient.get("/mfa-audit", headers=bearer(tokens["access_token"]))
    # the skill's acrValues are checked first: an RFC 9470 challenge naming them
    assert resp.status_code == 401, resp.data
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge and MFA_ACR in challenge


def test_step_up_round_trip_without_reauthentication_when_max_auth_age_is_below_clock_skew(make_app, real_op,
                                                                                         op_browser, clock):
    """Like above, for a skill whose maxAuthAge (30 s) is below the provider's
    clockSkew (60 s): the sign-in is 45 s old, the OP is asked without
    prompt=login / max_age and silently returns the old auth_time. That round
    trip did not re-authenticate and must be refused (docs/skills.md: "a round
    trip in which the IdP did not re-authenticate is refused with 400
    stepup_not_satisfied"), not announced as a satisfied step-up."""
    skills = skills_config(**{"quick-deploy": {"allowedGroups": ["devops-engineers"], "maxAuthAge": 30}})
    app = add_routes(make_app(op_config(real_op, skills)))

    @app.get("/quick")
    @requires_skill("quick-deploy")
    def quick() -> str:
        return "quick ok"

    client = app.test_client()
    first = signed_in(client, op_browser, "carol")
    clock.now = first["auth_time"] + 45
    resp = client.get("/quick")
    assert resp.status_code == 302 and "stepup=quick-deploy" in resp.headers["Location"]
    idp_url = client.get(resp.headers["Location"]).headers["Location"]
    time.sleep(1.1)
    silent = op_browser.authorize_silently(_without(idp_url, "prompt", "max_age"))
    with listen_to(signals.stepup_satisfied) as satisfied:
        resp = client.get(path_of(silent), headers={"Accept": "application/json"})
    assert resp.status_code == 400, resp.data
    assert resp.get_json()["error"] == reasons.STEPUP_NOT_SATISFIED
    assert satisfied == []
