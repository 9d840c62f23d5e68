"""OIDC Back-Channel Logout 1.0: forged tokens are refused, valid ones end sessions everywhere."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from flask_ccsso import signals
from flask_ccsso.backchannel import BACKCHANNEL_EVENT
from flask_ccsso.exceptions import StoreUnavailable
from flask_ccsso.extension import get_state
from flask_ccsso.testing import listen_to
from tests.support.local_op import CLIENT_ID
from tests.support.sessions import login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
URL = "/sso/op/backchannel-logout"


def logout_claims(op: Any, clock: Any, **over: Any) -> dict[str, Any]:
    claims = {"iss": op.issuer, "aud": CLIENT_ID, "iat": int(clock.now), "jti": uuid.uuid4().hex,
              "events": {BACKCHANNEL_EVENT: {}}, "sid": "op-sid-1", "sub": "u-alice"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def post(client: Any, token: str | None) -> Any:
    return client.post(URL, data={"logout_token": token} if token is not None else {})


@pytest.fixture
def signed_in(redis_app: Any, op: Any) -> tuple[Any, Any, str]:
    app = redis_app()
    client = app.test_client()
    sid = login(client, op)
    assert client.get("/me").status_code == 200
    return app, client, sid


def _forgeries(op: Any, clock: Any) -> dict[str, tuple[str, str]]:
    """name -> (what the refusal must mention, token)"""
    other_key = RSAKey.generate_key(2048, parameters={"kid": op.key.kid}, private=True)
    c = lambda **o: logout_claims(op, clock, **o)
    return {
        "wrong key": ('signature', op.sign(c(), key=other_key)),
        "wrong aud": ('another application', op.sign(c(aud="someone-else"))),
        "wrong iss": ('someone else', op.sign(c(iss="https://evil.example"))),
        "nonce present": ('nonce', op.sign(c(nonce="n-1"))),
        "missing events": ('logout event', op.sign(c(events=None))),
        "wrong event": ('logout event', op.sign(c(events={"http://schemas.openid.net/event/other": {}}))),
        "event not an object": ('logout event', op.sign(c(events={BACKCHANNEL_EVENT: "yes"}))),
        "neither sub nor sid": ('neither sub nor sid', op.sign(c(sub=None, sid=None))),
        "no jti": ('jti', op.sign(c(jti=None))),
        "no iat": ('iat', op.sign(c(iat=None))),
        "iat in the future": ('future', op.sign(c(iat=int(clock.now) + 3600))),
        "too old": ('too old', op.sign(c(iat=int(clock.now) - 3600))),
        "expired": ('expired', op.sign(c(exp=int(clock.now) - 600))),
        "access token typ": ('typ', op.sign(c(), header={"typ": "at+jwt"})),
        "alg none": ("'none'", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1LWFsaWNlIn0."),
        "garbage": ('malformed', "not-a-jwt"),
    }


def test_forged_logout_tokens_are_refused(signed_in: Any, op: Any, clock: Any) -> None:
    app, client, _sid = signed_in
    idp = app.test_client()  # the IdP has no browser cookie
    with listen_to(signals.backchannel_logout) as heard:
        for name, (why, token) in _forgeries(op, clock).items():
            resp = post(idp, token)
            assert resp.status_code == 400, name
            assert resp.get_json()["error"] == "invalid_request", name
            assert why in resp.get_json()["error_description"], name
            assert "no-store" in resp.headers["Cache-Control"], name
    assert heard == []
    assert post(idp, None).status_code == 400
    assert client.get("/me").status_code == 200  # nothing was ended


def test_valid_logout_token_by_sid_ends_the_session(signed_in: Any, op: Any, clock: Any) -> None:
    app, client, _sid = signed_in
    idp = app.test_client()
    with listen_to(signals.backchannel_logout) as bcl, listen_to(signals.session_revoked) as revoked:
        resp = post(idp, op.sign(logout_claims(op, clock, sub=None), header={"typ": "logout+jwt"}))
    assert resp.status_code == 200 and "no-store" in resp.headers["Cache-Control"]
    assert [r.kwargs for r in bcl] == [{"provider": "op", "subject": None, "sid": "op-sid-1", "count": 1}]
    assert revoked[0].kwargs["reason"] == "backchannel_logout" and revoked[0].kwargs["count"] == 1
    with listen_to(signals.session_expired) as heard:
        resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "revoked"
    assert heard[0].kwargs["reason"] == "revoked"


def test_valid_logout_token_by_sub_ends_every_session_of_the_user(signed_in: Any, redis_app: Any, op: Any,
                                                                   clock: Any) -> None:
    app, client, _sid = signed_in
    other_worker = redis_app()  # a second instance sharing Redis receives the call
    second = app.test_client()
    login(second, op, id_claims={"sid": "op-sid-2"})
    resp = post(other_worker.test_client(), op.sign(logout_claims(op, clock, sid=None)))
    assert resp.status_code == 200
    assert client.get("/me").status_code == 302 and second.get("/me").status_code == 302


def test_sid_and_sub_must_agree(signed_in: Any, op: Any, clock: Any) -> None:
    app, client, _sid = signed_in
    resp = post(app.test_client(), op.sign(logout_claims(op, clock, sub="u-bob")))
    assert resp.status_code == 200  # valid token, nothing of bob's under that sid
    assert client.get("/me").status_code == 200


def test_replayed_logout_token_is_refused(signed_in: Any, op: Any, clock: Any) -> None:
    app, client, _sid = signed_in
    token = op.sign(logout_claims(op, clock, sid="no-such-session"))
    assert post(app.test_client(), token).status_code == 200  # valid, nothing matched
    resp = post(app.test_client(), token)
    assert resp.status_code == 400 and "already used" in resp.get_json()["error_description"]
    assert client.get("/me").status_code == 200


# --------------------------------------------------------------------------- retries after a store outage
# A back-channel logout that fails with a store outage after its ``jti`` was recorded must still
# work when the IdP retries it.

def test_retry_after_a_store_outage_is_not_refused_as_a_replay(signed_in: Any, op: Any, clock: Any,
                                                               monkeypatch: Any) -> None:
    app, client, _sid = signed_in
    state = get_state(app)
    real = state.sessions.revoke_sids  # every revocation goes through the session index
    calls = {"n": 0}

    def flaky(sids: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable()
        return real(sids)

    monkeypatch.setattr(state.sessions, "revoke_sids", flaky)
    token = op.sign(logout_claims(op, clock), header={"typ": "logout+jwt"})
    assert post(app.test_client(), token).status_code == 503
    resp = post(app.test_client(), token)  # the IdP retries the same token
    assert resp.status_code == 200, resp.get_json()
    assert client.get("/me", headers=JSON).status_code == 401
    # and a real replay after success is still refused
    assert post(app.test_client(), token).status_code == 400
