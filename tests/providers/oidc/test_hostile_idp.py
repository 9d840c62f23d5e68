"""Review: hostile-IdP and malformed-input cases for OIDC sign-in and keys.

Each test is a class of input a real IdP (or someone in front of it) can send
that the original tests did not cover.
"""

from __future__ import annotations

import json
import math

import pytest
from joserfc.jwk import RSAKey
from werkzeug.wrappers import Response

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.local_op import CLIENT_ID
from tests.support.oidc import authorize_params, callback, oidc_config, start_login
from tests.support.skills import access_token, bearer


def _patch_token_body(op, monkeypatch, change):
    """Let the LocalOP answer at its token endpoint, then rewrite the JSON body."""
    original = op._token

    def token(req):
        resp = original(req)
        body = json.loads(resp.get_data())
        out = change(body)
        data = out if isinstance(out, (bytes, str)) else json.dumps(out)
        return Response(data, status=resp.status_code, mimetype="application/json")

    monkeypatch.setattr(op, "_token", token)


def _login(client, op, clock, **claims):
    url = start_login(client)
    q = authorize_params(url)
    now = int(clock.now)
    c = op.id_claims(q.get("nonce"), **{"iat": now, "exp": now + 300, "auth_time": now, **claims})
    return callback(client, op.issue_code(url, claims=c))


# --------------------------------------------------------------------------- auth_time NaN

def test_nan_auth_time_never_satisfies_step_up(app, op, clock):
    prov = app.extensions["ccsso"].providers["op"]
    from flask_ccsso.exceptions import AuthenticationFailed

    for bad in (float("nan"), float("inf"), "1700000000", True):
        with pytest.raises(AuthenticationFailed) as info:
            prov.check_freshness({"auth_time": bad}, max_age=300, acr_values=(), force=True, started_at=clock.now)
        assert info.value.reason == reasons.STEPUP_NOT_SATISFIED


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_id_token_claims_with_nan_or_infinity_are_malformed(client, op, clock, value):
    """Python's json accepts NaN and Infinity; RFC 8259 JSON has neither. A NaN
    auth_time would compare false with every bound (fresh forever), so an ID
    token carrying one is refused whole, as malformed, and no session starts."""
    with listen_to(signals.login_failed) as failed:
        resp = _login(client, op, clock, auth_time=value)
    assert resp.status_code == 400
    assert failed and failed[-1].kwargs["reason"] == reasons.INVALID_TOKEN
    with client.session_transaction() as s:
        assert "_ccsso" not in s or not s["_ccsso"].get("identity")
    assert client.get("/s/prod-deploy", headers={"Accept": "application/json"}).status_code == 401

# --------------------------------------------------------------------------- token endpoint

@pytest.mark.parametrize("token_type", ["DPoP", "mac", "N_A", 7])
def test_token_type_other_than_bearer_is_refused(client, op, clock, monkeypatch, token_type):
    _patch_token_body(op, monkeypatch, lambda b: {**b, "token_type": token_type})
    with listen_to(signals.login_failed) as failed:
        resp = _login(client, op, clock)
    assert resp.status_code == 400
    assert failed and failed[-1].kwargs["reason"] == reasons.TOKEN_EXCHANGE_FAILED


def test_bearer_token_type_any_case_is_fine(client, op, clock, monkeypatch):
    _patch_token_body(op, monkeypatch, lambda b: {**b, "token_type": "bearer"})
    assert _login(client, op, clock).status_code == 302


@pytest.mark.parametrize("body", [b"[1, 2, 3]", b"not json", b'"a string"', b'{"access_token": NaN}',
                                  b'{"access_token": ["x"], "token_type": "Bearer"}'])
def test_malformed_token_response_is_400_never_500(client, op, clock, monkeypatch, body):
    _patch_token_body(op, monkeypatch, lambda b: body)
    with listen_to(signals.login_failed) as failed:
        resp = _login(client, op, clock)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert failed and failed[-1].kwargs["reason"] == reasons.TOKEN_EXCHANGE_FAILED


def test_giant_token_response_is_refused_without_reading_it_all(client, op, clock, monkeypatch):
    _patch_token_body(op, monkeypatch, lambda b: {**b, "padding": "x" * (3 * 1024 * 1024)})
    with listen_to(signals.login_failed) as failed:
        resp = _login(client, op, clock)
    assert resp.status_code == 503
    assert failed and failed[-1].kwargs["reason"] == reasons.IDP_UNAVAILABLE


def test_expires_in_nan_or_huge_is_not_believed(app, client, op, clock, monkeypatch):
    _patch_token_body(op, monkeypatch, lambda b: json.dumps({**b, "expires_in": 10**30}))
    assert _login(client, op, clock).status_code == 302
    with client.session_transaction() as s:
        exp = s["_ccsso"]["tokens"]["expires_at"]
    assert exp is None or (math.isfinite(exp) and exp < clock.now + 366 * 86400)


def test_idp_error_code_is_sanitised(client, op):
    url = start_login(client)
    params = op.issue_code(url, error='access_denied"><script>alert(1)</script>')
    resp = callback(client, params, headers={"Accept": "application/json"})
    assert resp.status_code == 400
    assert "<script>" not in resp.get_data(as_text=True)


# --------------------------------------------------------------------------- discovery

def test_discovery_sending_tokens_over_plain_http_is_refused(make_app, op):
    op.extra_metadata = {"token_endpoint": "http://idp.example.com/token"}
    client = make_app(oidc_config(op)).test_client()
    resp = client.get("/sso/op/login?next=/me", headers={"Accept": "application/json"})
    assert resp.status_code == 503


# --------------------------------------------------------------------------- JWKS shapes

def test_duplicate_kid_in_jwks_still_verifies(client, op, clock):
    twin = RSAKey.generate_key(2048, parameters={"kid": op.key.kid, "use": "sig"}, private=True)
    op.keys = [twin, op.key]  # the stale key with the same kid comes first
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200


def test_token_without_kid_and_several_keys(client, op, clock):
    other = RSAKey.generate_key(2048, parameters={"kid": "other", "use": "sig"}, private=True)
    op.keys = [other, op.key]
    tok = op.sign({"iss": op.issuer, "sub": "u-1", "aud": CLIENT_ID, "exp": int(clock.now) + 600,
                   "iat": int(clock.now), "scp": "migration:write", "groups": ["database-admins"]},
                  key=RSAKey.import_key({k: v for k, v in op.key.as_dict(private=True).items() if k != "kid"}))
    assert "kid" not in json.loads(__import__("base64").urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert client.get("/s/database-migration", headers=bearer(tok)).status_code == 200


def test_one_unreadable_key_does_not_take_the_others_down(client, op, clock, monkeypatch):
    good = op._route

    def route(req):
        resp = good(req)
        if req.path == "/jwks":
            doc = json.loads(resp.get_data())
            doc["keys"].insert(0, {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "weird"})
            doc["keys"].insert(0, {"kty": "RSA", "kid": "no-modulus", "use": "sig"})
            return Response(json.dumps(doc), mimetype="application/json")
        return resp

    monkeypatch.setattr(op, "_route", route)
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200


@pytest.mark.parametrize("doc", [{"keys": None}, {"keys": "abc"}, {"keys": {"kid": "k"}}, {}])
def test_malformed_jwks_is_503_never_500(client, op, clock, monkeypatch, doc):
    good = op._route

    def route(req):
        if req.path == "/jwks":
            return Response(json.dumps(doc), mimetype="application/json")
        return good(req)

    monkeypatch.setattr(op, "_route", route)
    resp = client.get("/s/database-migration", headers=bearer(access_token(op, clock)))
    assert resp.status_code == 503, resp.get_data(as_text=True)


def test_jku_and_x5u_headers_are_never_followed(client, op, clock):
    attacker = RSAKey.generate_key(2048, parameters={"kid": op.key.kid}, private=True)
    tok = access_token(op, clock, key=attacker, header={"jku": f"{op.issuer}/evil-jwks", "x5u": f"{op.issuer}/x",
                                                        "jwk": attacker.as_dict(private=False)})
    before = op.jwks_hits
    resp = client.get("/s/database-migration", headers=bearer(tok))
    assert resp.status_code == 401
    assert op.jwks_hits - before <= 1


# --------------------------------------------------------------------------- refresh

def test_refresh_id_token_for_another_subject_is_refused(app, client, op, clock):
    assert _login(client, op, clock).status_code == 302
    with client.session_transaction() as s:
        tokens = dict(s["_ccsso"]["tokens"])
    now = int(clock.now)
    op.refresh_handler = lambda form: {
        "access_token": "at-new", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-2",
        "id_token": op.sign(op.id_claims(None, sub="u-mallory", iat=now, exp=now + 300))}
    prov = app.extensions["ccsso"].providers["op"]
    from flask_ccsso.exceptions import AuthenticationFailed

    with app.app_context(), pytest.raises(AuthenticationFailed):
        prov.refresh(tokens)
    # same subject: fine
    op.refresh_handler = lambda form: {
        "access_token": "at-new", "token_type": "Bearer", "expires_in": 3600,
        "id_token": op.sign(op.id_claims(None, iat=now, exp=now + 300))}
    with app.app_context():
        kept, ident = prov.refresh(tokens)
    assert ident is not None and ident.subject == "u-alice" and kept["refresh_token"] == tokens["refresh_token"]
