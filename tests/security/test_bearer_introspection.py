"""Issue 10 #3: refresh tokens, other clients' tokens and audience-less tokens
presented as ``Authorization: Bearer`` and accepted through RFC 7662 introspection.

The class: an introspection answer is accepted only when it is ``active``,
names an ``aud`` this API accepts (per-provider opt-out
``introspectionRequireAudience: false``, which still needs a ``token_type``
that says access token), shows no sign of being a refresh / ID token in
*any* field, and passes ``allowedClients``.

The refresh-token cases run against the real oidc-provider (tests/interop/op):
it answers the introspection of a refresh token with ``active: true`` and
neither ``token_type`` nor ``aud``, whatever ``token_type_hint`` says. Other
vendors' answer shapes come from a scripted loopback endpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import reasons, requires_skill, signals
from flask_ccsso.testing import listen_to
from tests.interop.op_harness import Browser, RealOP, callback_params, pkce_pair
from tests.security.idp_endpoints import bearer
from tests.support.local_op import CLIENT_ID
from tests.support.oidc import SKILLS
from tests.support.skills import add_skill_routes, skills_config

CALLBACK = "http://localhost/callback"
SCOPES = "openid profile email groups"


# --------------------------------------------------------------------------- the real oidc-provider

@pytest.fixture(scope="module")
def opaque_op() -> Iterator[RealOP]:
    """oidc-provider issuing opaque (introspectable) access tokens, and refresh tokens."""
    if shutil.which("node") is None:
        pytest.fail("these attack tests need Node.js on PATH to run oidc-provider; refusing to skip", pytrace=False)
    op = RealOP().start([CALLBACK], jwt_access_tokens=False)
    try:
        yield op
    finally:
        op.stop()


def real_tokens(op: RealOP, user: str = "alice", client: str = "portal") -> dict[str, Any]:
    """A code exchange done by hand, as an API client of the OP would."""
    verifier, challenge = pkce_pair()
    client_id = op.client_id if client == "portal" else op.other_client_id
    with Browser(op) as browser:
        cb = browser.login(op.authorize_url(CALLBACK, scope=SCOPES, client_id=client_id, code_challenge=challenge),
                           user)
    resp = op.token_request({"grant_type": "authorization_code", "code": callback_params(cb)["code"],
                             "redirect_uri": CALLBACK, "code_verifier": verifier}, client=client)
    assert resp.status_code == 200, resp.text
    tokens = dict(resp.json())
    assert tokens["refresh_token"] and "." not in tokens["access_token"]  # opaque, introspected
    return tokens


def real_app(make_app: Any, op: RealOP, **prov: Any) -> Flask:
    cfg = {"auth": {"providers": {"op": {
        "provider": "oidc", "clientId": op.client_id, "clientSecret": op.client_secret, "issuer": op.issuer,
        "scopes": SCOPES.split(), "audience": "api://portal", **prov}}},
        "skills": {**SKILLS, "scope-only": {"requiredScopes": ["openid"]}}, "session": {"cookieSecure": False}}
    app = make_app(cfg)

    @app.get("/scoped")
    @requires_skill("scope-only")
    def scoped() -> str:
        return "scoped ok"

    return app


@pytest.fixture(scope="module")
def alice(opaque_op: RealOP) -> dict[str, Any]:
    return real_tokens(opaque_op)


@pytest.fixture(scope="module")
def alice_other(opaque_op: RealOP) -> dict[str, Any]:
    return real_tokens(opaque_op, client="other")


def _refused(resp: Any) -> None:
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert resp.get_json()["error"] == reasons.INVALID_TOKEN


@pytest.mark.parametrize("path", ["/me", "/scoped"])
@pytest.mark.parametrize("whose", ["ours", "other client's"])
def test_real_op_refresh_token_is_not_an_access_token(make_app, opaque_op, alice, alice_other, path, whose):
    client = real_app(make_app, opaque_op).test_client()
    token = (alice if whose == "ours" else alice_other)["refresh_token"]
    with listen_to(signals.login_failed) as failed:
        _refused(client.get(path, headers=bearer(token)))
    assert [f.kwargs["reason"] for f in failed] == [reasons.INVALID_TOKEN]
    assert token not in (failed[0].kwargs["detail"] or "")


def test_real_op_other_clients_audience_less_access_token_is_refused(make_app, opaque_op, alice_other):
    client = real_app(make_app, opaque_op).test_client()
    _refused(client.get("/me", headers=bearer(alice_other["access_token"])))


def test_real_op_audience_less_access_token_needs_the_opt_out(make_app, opaque_op, alice, alice_other):
    """Our own client's opaque token for no API is refused by default; the
    documented, weaker opt-out accepts it -- but never a refresh token (no
    ``token_type``), and ``allowedClients`` still applies."""
    strict = real_app(make_app, opaque_op).test_client()
    _refused(strict.get("/me", headers=bearer(alice["access_token"])))

    weak = real_app(make_app, opaque_op, introspectionRequireAudience=False,
                    allowedClients=[opaque_op.client_id]).test_client()
    resp = weak.get("/me", headers=bearer(alice["access_token"]))
    assert resp.status_code == 200 and resp.get_json()["subject"] == "u-alice"
    _refused(weak.get("/me", headers=bearer(alice["refresh_token"])))
    _refused(weak.get("/me", headers=bearer(alice_other["access_token"])))
    _refused(weak.get("/me", headers=bearer(alice_other["refresh_token"])))


# --------------------------------------------------------------------------- vendor answer shapes

def _answer(clock: Any, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"active": True, "sub": "u-bob", "client_id": "cli", "scope": "migration:write",
                            "exp": int(clock.now) + 600, "groups": ["database-admins"], "aud": CLIENT_ID,
                            "token_type": "Bearer"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


REFRESH_SHAPES = {
    "oidc-provider (no token_type, no aud)": {"token_type": None, "aud": None},
    "oidc-provider with our aud but no token_type, opted out": {"token_type": None, "aud": None},
    "Okta refresh_token": {"token_type": "refresh_token"},
    "RFC 8693 URI": {"token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    "capitalised": {"token_type": "Refresh"},
    "Keycloak typ Refresh": {"token_type": None, "typ": "Refresh"},
    "Keycloak typ Offline": {"token_type": None, "typ": "Offline"},
    "Keycloak typ ID": {"token_type": None, "typ": "ID"},
    "Hydra token_use": {"token_type": None, "token_use": "refresh_token"},
    "Cognito token_use": {"token_type": None, "token_use": "refresh"},
    "token_use id": {"token_use": "id"},
    "ID token type": {"token_type": "urn:ietf:params:oauth:token-type:id_token"},
    "token_type not a string": {"token_type": ["Bearer", "refresh_token"]},
    "unknown token_type": {"token_type": "N_A"},
}


@pytest.mark.parametrize("shape", list(REFRESH_SHAPES))
def test_refresh_and_id_tokens_refused_by_any_sign(make_app, op, clock, scripted_idp, shape):
    over: dict[str, Any] = {}
    if "opted out" in shape:
        over["introspectionRequireAudience"] = False
    client = add_skill_routes(make_app(skills_config(op, **over))).test_client()
    scripted_idp.answers["tok"] = _answer(clock, **REFRESH_SHAPES[shape])
    with listen_to(signals.login_failed) as failed:
        _refused(client.get("/s/database-migration", headers=bearer("tok")))
    assert [f.kwargs["reason"] for f in failed] == [reasons.INVALID_TOKEN]


@pytest.mark.parametrize("over", [
    {"aud": None},                      # another client's token for no API
    {"aud": "other-api"},
    {"aud": ["other-api", "third-api"]},
    {"aud": 42},                        # malformed
    {"aud": []},
])
def test_audience_rule(make_app, op, clock, scripted_idp, over):
    client = add_skill_routes(make_app(skills_config(op))).test_client()
    scripted_idp.answers["tok"] = _answer(clock, **over)
    _refused(client.get("/s/database-migration", headers=bearer("tok")))


def test_audience_list_with_ours_is_accepted(make_app, op, clock, scripted_idp):
    client = add_skill_routes(make_app(skills_config(op, audience=["api://portal", CLIENT_ID]))).test_client()
    scripted_idp.answers["tok"] = _answer(clock, aud=["api://portal", "other"])
    assert client.get("/s/database-migration", headers=bearer("tok")).status_code == 200


def test_opt_out_accepts_audience_less_access_tokens_only(make_app, op, clock, scripted_idp):
    client = add_skill_routes(make_app(skills_config(op, introspectionRequireAudience=False))).test_client()
    scripted_idp.answers["at"] = _answer(clock, aud=None)
    scripted_idp.answers["foreign"] = _answer(clock, aud="other-api")  # an aud, when present, is still checked
    assert client.get("/s/database-migration", headers=bearer("at")).status_code == 200
    _refused(client.get("/s/database-migration", headers=bearer("foreign")))


@pytest.mark.parametrize("claim", ["client_id", "azp", "cid"])
def test_allowed_clients_apply_to_introspection_answers(make_app, op, clock, scripted_idp, claim):
    cfg = skills_config(op, allowedClients=["portal-cli"])
    client = add_skill_routes(make_app(cfg)).test_client()
    scripted_idp.answers["ours"] = _answer(clock, **{"client_id": None, claim: "portal-cli"})
    scripted_idp.answers["theirs"] = _answer(clock, **{"client_id": None, claim: "intruder"})
    scripted_idp.answers["nobody"] = _answer(clock, client_id=None)
    assert client.get("/s/database-migration", headers=bearer("ours")).status_code == 200
    _refused(client.get("/s/database-migration", headers=bearer("theirs")))
    _refused(client.get("/s/database-migration", headers=bearer("nobody")))


def test_plain_access_token_answer_still_works(make_app, op, clock, scripted_idp):
    client = add_skill_routes(make_app(skills_config(op))).test_client()
    for i, token_type in enumerate(("Bearer", "bearer", "access_token",
                                    "urn:ietf:params:oauth:token-type:access_token")):
        scripted_idp.answers[f"t-{i}"] = _answer(clock, token_type=token_type)
        resp = client.get("/s/database-migration", headers=bearer(f"t-{i}"))
        assert resp.status_code == 200 and resp.get_json()["via"] == "bearer", token_type
    scripted_idp.answers["keycloak"] = _answer(clock, token_type=None, typ="Bearer")
    assert client.get("/s/database-migration", headers=bearer("keycloak")).status_code == 200
    scripted_idp.answers["hydra"] = _answer(clock, token_use="access_token")
    assert client.get("/s/database-migration", headers=bearer("hydra")).status_code == 200
