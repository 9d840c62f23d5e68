"""Bearer access tokens (real RS256 JWTs from the LocalOP) checked against the same skills."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

import pytest
from joserfc.jwk import RSAKey

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.skills import (
    JSON,
    access_token,
    add_skill_routes,
    bearer,
    sign_in,
    skills_config,
    token_claims,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_jwt(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


def _assert_invalid_token(resp):
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    body = resp.get_json()
    assert body["error"] == reasons.INVALID_TOKEN
    return body


# --------------------------------------------------------------------------- allowed / denied

def test_valid_token_is_checked_against_the_same_skills(client, op, clock, app):
    tok = access_token(op, clock, scope="migration:write", groups=["senior-developers"])
    with listen_to(signals.skill_invoked) as invoked:
        resp = client.get("/s/database-migration", headers=bearer(tok))
    assert resp.status_code == 200 and resp.get_json() == {"ok": "database-migration", "via": "bearer"}
    assert invoked[0].kwargs["via"] == "bearer" and invoked[0].kwargs["identity"].via == "bearer"
    assert invoked[0].kwargs["identity"].subject == "u-bob" and invoked[0].kwargs["identity"].provider == "op"
    me = client.get("/me", headers=bearer(tok)).get_json()
    assert me["scopes"] == ["migration:write"] and me["groups"] == ["senior-developers"]


@pytest.mark.parametrize("scope_claims", [
    {"scp": "security:read migration:write"},
    {"scp": ["security:read", "migration:write"]},
    {"scp": None, "scope": "security:read migration:write"},
])
def test_scope_claim_shapes(client, op, clock, scope_claims):
    claims = token_claims(op, clock, groups=["security-team"], **scope_claims)
    tok = op.sign({k: v for k, v in claims.items() if v is not None}, header={"typ": "at+jwt"})
    assert client.get("/s/security-audit", headers=bearer(tok)).status_code == 200


def test_missing_scope_and_group_are_403_json(client, op, clock):
    tok = access_token(op, clock, scope="openid", groups=["database-admins"])
    with listen_to(signals.permission_denied) as denied:
        resp = client.get("/s/database-migration", headers=bearer(tok))
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "missing_scope", "skill": "database-migration", "condition": "requiredScopes",
                               "missing_scopes": ["migration:write"],
                               "error_description": resp.get_json()["error_description"]}
    assert denied[0].kwargs["via"] == "bearer" and denied[0].kwargs["identity"].via == "bearer"
    # RFC 6750 3.1: the challenge says insufficient_scope and which scope to ask for
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", error_description="')
    assert challenge.endswith(', scope="migration:write"')
    tok = access_token(op, clock, scope="security:read", groups=["staff", "top-secret"])
    resp = client.get("/s/security-audit", headers=bearer(tok))
    assert resp.status_code == 403 and resp.get_json()["condition"] == "allowedGroups"
    assert "top-secret" not in resp.get_data(as_text=True)
    assert "WWW-Authenticate" not in resp.headers  # a missing group is no scope the client could ask for


def test_no_scopes_claim_means_no_scopes(client, op, clock):
    """Not 'as requested' as for a sign-in: an access token without scp has none."""
    tok = access_token(op, clock, scope=None, groups=["database-admins"])
    assert client.get("/s/database-migration", headers=bearer(tok)).status_code == 403


def test_bearer_mfa_and_networks(client, op, clock):
    weak = access_token(op, clock, amr=["pwd"])
    strong = access_token(op, clock, amr=["pwd", "mfa"])
    assert client.get("/s/mfa-needed", headers=bearer(weak)).status_code == 403
    assert client.get("/s/mfa-needed", headers=bearer(strong)).status_code == 200
    assert client.get("/s/office-only", headers=bearer(strong), environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    assert client.get("/s/office-only", headers=bearer(strong), environ_base={"REMOTE_ADDR": "8.8.8.8"}).status_code == 403


def test_bearer_wins_over_a_browser_session(client, op, clock):
    sign_in(client, op, clock, groups=["security-team"], scope="openid security:read")
    assert client.get("/s/security-audit").status_code == 200
    tok = access_token(op, clock, scope="migration:write", groups=["database-admins"])
    assert client.get("/s/security-audit", headers=bearer(tok)).status_code == 403


# --------------------------------------------------------------------------- attacks

def test_alg_none(client, op, clock):
    tok = _raw_jwt({"alg": "none", "typ": "JWT"}, token_claims(op, clock))
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))


def test_hs256_keyed_with_the_public_key(client, op, clock):
    pub_pem = op.key.as_pem(private=False)
    header = {"alg": "HS256", "kid": op.key.kid, "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(token_claims(op, clock)).encode())}"
    sig = hmac.new(pub_pem, signing_input.encode(), hashlib.sha256).digest()
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(f"{signing_input}.{_b64(sig)}")))


def test_forged_signature_with_the_real_kid(client, op, clock):
    attacker = RSAKey.generate_key(2048, parameters={"kid": op.key.kid}, private=True)
    tok = op.sign(token_claims(op, clock), key=attacker)
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))


def test_tampered_payload(client, op, clock):
    tok = op.sign(token_claims(op, clock, groups=["staff"]))
    h, _, s = tok.split(".")
    evil = f"{h}.{_b64(json.dumps(token_claims(op, clock)).encode())}.{s}"
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(evil)))


@pytest.mark.parametrize("over", [
    {"aud": "some-other-api"},
    {"aud": ["some-other-api", "another"]},
    {"aud": None},
    {"iss": "https://evil.example.com"},
    {"iss": None},
    {"sub": None},
    {"nonce": "n-1"},  # an ID token is not an access token
])
def test_wrong_claims(client, op, clock, over):
    tok = op.sign({k: v for k, v in token_claims(op, clock, **over).items() if v is not None})
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))


def test_time_claims(client, op, clock):
    now = int(clock.now)
    expired = op.sign(token_claims(op, clock, exp=now - 120, iat=now - 700))
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(expired)))
    no_exp = op.sign({k: v for k, v in token_claims(op, clock).items() if k != "exp"})
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(no_exp)))
    future = op.sign(token_claims(op, clock, nbf=now + 600))
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(future)))
    issued_later = op.sign(token_claims(op, clock, iat=now + 600, exp=now + 1200))
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(issued_later)))
    within_leeway = op.sign(token_claims(op, clock, exp=now - 30))
    assert client.get("/s/database-migration", headers=bearer(within_leeway)).status_code == 200


@pytest.mark.parametrize("typ, ok", [("JWT", True), ("at+jwt", True), ("application/at+JWT", True),
                                     ("logout+jwt", False), ("JWS", False)])
def test_typ(client, op, clock, typ, ok):
    tok = op.sign(token_claims(op, clock), header={"typ": typ})
    resp = client.get("/s/database-migration", headers=bearer(tok))
    if ok:
        assert resp.status_code == 200
    else:
        _assert_invalid_token(resp)


@pytest.mark.parametrize("token", ["", "abc def", "not.a.jwt", "x" * 20000, "a.b", "%%%%", "eyJ.eyJ.sig"])
def test_garbage_never_500(client, token):
    resp = client.get("/s/database-migration", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_bad_token_sends_login_failed_once(client, op, clock, app):
    tok = op.sign(token_claims(op, clock, aud="other"))

    @app.get("/twice")
    def twice() -> str:
        from flask_ccsso import current_identity
        from flask_ccsso.exceptions import LoginRequired

        for _ in range(3):
            try:
                current_identity.email  # noqa: B018
            except LoginRequired:
                pass
        return "done"

    with listen_to(signals.login_failed) as failed:
        assert client.get("/twice", headers=bearer(tok)).get_data(as_text=True) == "done"
        _assert_invalid_token(client.get("/me", headers=bearer(tok)))
    assert [f.kwargs["reason"] for f in failed] == [reasons.INVALID_TOKEN, reasons.INVALID_TOKEN]
    assert failed[0].kwargs["provider"] == "op" and "aud" in failed[0].kwargs["detail"]


def test_unknown_kid_spam_fetches_jwks_at_most_once_per_cooldown(client, op, clock):
    good = access_token(op, clock)
    assert client.get("/s/database-migration", headers=bearer(good)).status_code == 200
    before = op.jwks_hits
    attacker = RSAKey.generate_key(2048, private=True)
    for _ in range(25):
        key = RSAKey.import_key(attacker.as_dict(private=True), parameters={"kid": secrets.token_hex(6)})
        tok = op.sign(token_claims(op, clock), key=key)
        _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))
    assert op.jwks_hits - before <= 1
    clock.advance(61)
    for _ in range(5):
        key = RSAKey.import_key(attacker.as_dict(private=True), parameters={"kid": secrets.token_hex(6)})
        tok = op.sign(token_claims(op, clock), key=key)
        _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))
    assert op.jwks_hits - before <= 2


def test_key_rotation_is_picked_up(client, op, clock):
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200
    op.rotate()
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200


# --------------------------------------------------------------------------- cache

def test_verified_tokens_are_cached_until_exp(app, client, op, clock, monkeypatch):
    prov = app.extensions["ccsso"].providers["op"]
    calls = []
    real = prov.decode_jwt
    monkeypatch.setattr(prov, "decode_jwt", lambda token, **kw: calls.append(1) or real(token, **kw))
    tok = access_token(op, clock, exp=int(clock.now) + 120)
    for _ in range(5):
        assert client.get("/s/database-migration", headers=bearer(tok)).status_code == 200
    assert len(calls) == 1
    clock.advance(120 + 61)  # past exp + leeway
    _assert_invalid_token(client.get("/s/database-migration", headers=bearer(tok)))


def test_cache_is_bounded(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op), CCSSO_BEARER_CACHE_SIZE=3))
    client = app.test_client()
    for i in range(10):
        tok = access_token(op, clock, sub=f"u-{i}")
        assert client.get("/s/database-migration", headers=bearer(tok)).status_code == 200
    assert len(app.extensions["ccsso"].bearer_authenticator.cache) == 3


def test_idp_down_with_no_keys_is_503_not_500(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    op.down = True
    resp = app.test_client().get("/s/database-migration", headers=bearer(access_token(op, clock)))
    assert resp.status_code == 503


def test_public_view_ignores_nothing_but_never_500s(client, op):
    resp = client.get("/", headers=bearer("garbage"))
    assert resp.status_code == 200
    resp = client.get("/me", headers={**bearer("garbage"), **JSON})
    assert resp.status_code == 401


def test_challenge_description_stays_within_rfc6750_charset(client, op, clock):
    """error_description echoes the token's alg; RFC 6750 3 allows %x20-21 / %x23-5B / %x5D-7E only,
    and a header value a WSGI server cannot encode as latin-1 turns the 401 into a 500."""
    tok = _raw_jwt({"alg": "\u20ac\u2603\u00e9", "typ": "at+jwt"}, token_claims(op, clock))
    resp = client.get("/s/database-migration", headers=bearer(tok))
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"'), challenge
    assert all(0x20 <= ord(c) <= 0x7E for c in challenge), challenge
