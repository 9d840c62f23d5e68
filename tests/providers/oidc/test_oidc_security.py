"""Attacks on the OIDC sign-in, each against the real validation path."""

from __future__ import annotations

import base64
import json
import time

import pytest
from joserfc.jwk import RSAKey

from flask_ccsso.testing import log_out
from tests.support.local_op import CLIENT_ID
from tests.support.oidc import authorize_params, callback, oidc_config, start_login


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _login_with(make_app, op, failures, *, token=None, claims_over=None, accept_json=False, **cfg):
    app = make_app(oidc_config(op, **cfg))
    client = app.test_client()
    url = start_login(client)
    nonce = authorize_params(url)["nonce"]
    if token is None:
        over = dict(claims_over or {})
        token = op.sign(op.id_claims(over.pop("nonce", nonce), **over))
    elif callable(token):
        token = token(nonce)
    headers = {"Accept": "application/json"} if accept_json else {}
    resp = callback(client, op.issue_code(url, id_token=token), headers=headers)
    return app, client, resp


def _assert_refused(resp, client, failures, reason):
    assert resp.status_code == 400, resp.data
    assert b"Traceback" not in resp.data
    assert failures and failures[-1]["reason"] == reason, failures
    assert client.get("/me").status_code == 302  # not signed in


def test_valid_token_signs_in(make_app, op, failures):
    _, client, resp = _login_with(make_app, op, failures)
    assert resp.status_code == 302
    assert client.get("/me").get_json()["subject"] == "u-alice"
    assert failures == []


def test_forged_signature(make_app, op, failures):
    other = RSAKey.generate_key(2048, parameters={"kid": op.key.kid}, private=True)
    _, client, resp = _login_with(make_app, op, failures, token=lambda n: op.sign(op.id_claims(n), key=other))
    _assert_refused(resp, client, failures, "invalid_token")


def test_alg_none(make_app, op, failures):
    def none_token(nonce):
        return f"{_b64({'alg': 'none', 'kid': op.key.kid})}.{_b64(op.id_claims(nonce))}."
    _, client, resp = _login_with(make_app, op, failures, token=none_token)
    _assert_refused(resp, client, failures, "invalid_token")


def test_hs256_keyed_with_public_key(make_app, op, failures):
    """The classic RS/HS confusion: HMAC with the IdP's public key as secret."""
    import hashlib
    import hmac

    pem = op.key.as_pem(private=False)

    def confused(nonce):
        # joserfc refuses to build such a key, so the attacker signs by hand
        signing_input = f"{_b64({'alg': 'HS256', 'kid': op.key.kid})}.{_b64(op.id_claims(nonce))}"
        sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    _, client, resp = _login_with(make_app, op, failures, token=confused)
    _assert_refused(resp, client, failures, "invalid_token")


@pytest.mark.parametrize("over,reason", [
    ({"aud": "someone-else"}, "invalid_audience"),
    ({"aud": [CLIENT_ID, "other"]}, "invalid_audience"),          # several audiences, no azp
    ({"azp": "other"}, "invalid_audience"),
    ({"iss": "https://evil.example.com"}, "issuer_mismatch"),
    ({"exp": int(time.time()) - 3600}, "token_expired"),
    ({"iat": int(time.time()) + 3600}, "invalid_token"),           # issued in the future
    ({"nonce": "not-the-nonce"}, "invalid_nonce"),
    ({"nonce": None}, "invalid_nonce"),
    ({"sub": None}, "invalid_token"),
])
def test_bad_claims(make_app, op, failures, over, reason):
    _, client, resp = _login_with(make_app, op, failures, claims_over=over)
    _assert_refused(resp, client, failures, reason)


def test_multiple_audiences_with_matching_azp_accepted(make_app, op, failures):
    _, _client, resp = _login_with(make_app, op, failures, claims_over={"aud": [CLIENT_ID, "other"], "azp": CLIENT_ID})
    assert resp.status_code == 302


def test_leeway_is_applied(make_app, op, failures, clock):
    # expired 30 s ago: inside the default 60 s leeway
    _, client, resp = _login_with(make_app, op, failures, claims_over={"exp": int(clock()) - 30})
    assert resp.status_code == 302
    # expired 30 s ago with leeway 0: refused
    failures.clear()
    _, client, resp = _login_with(make_app, op, failures, claims_over={"exp": int(clock()) - 30}, clockSkew=0)
    _assert_refused(resp, client, failures, "token_expired")


def test_leeway_follows_injected_clock(make_app, op, failures, clock):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    token = op.sign(op.id_claims(authorize_params(url)["nonce"]))
    params = op.issue_code(url, id_token=token)
    clock.advance(400)  # the token (exp +300) expired 100 s ago by the extension's clock
    resp = callback(client, params)
    assert resp.status_code == 400 and failures[-1]["reason"] == "token_expired"


def test_json_error_for_api_clients(make_app, op, failures):
    _, _client, resp = _login_with(make_app, op, failures, claims_over={"aud": "x"}, accept_json=True)
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_audience"


def test_replayed_state(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    params = op.issue_code(url)
    assert callback(client, params).status_code == 302
    resp = callback(client, params)
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_missing"


def test_missing_and_unknown_state(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    start_login(client)
    resp = callback(client, {"code": "x"})
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_missing"
    resp = callback(client, {"code": "x", "state": "made-up"})
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_missing"


def test_state_from_another_provider(make_app, op, failures):
    cfg = oidc_config(op)
    cfg["auth"]["providers"]["op2"] = dict(cfg["auth"]["providers"]["op"])
    app = make_app(cfg)
    client = app.test_client()
    url = start_login(client, provider="op")
    resp = callback(client, op.issue_code(url), provider="op2")
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_mismatch"


def test_state_bound_to_browser(make_app, op, failures):
    """Login CSRF: a victim's browser must not finish the attacker's sign-in."""
    app = make_app(oidc_config(op))
    attacker, victim = app.test_client(), app.test_client()
    url = start_login(attacker)
    victim.get("/")
    resp = callback(victim, op.issue_code(url))
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_mismatch"


def test_several_tabs(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    urls = [start_login(client, next_url=f"/tab{i}") for i in range(3)]
    # finish them out of order
    for i in (2, 0, 1):
        resp = callback(client, op.issue_code(urls[i]))
        assert resp.status_code == 302 and resp.headers["Location"] == f"/tab{i}"
    assert failures == []


def test_idp_error_response(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url, error="access_denied"))
    assert resp.status_code == 400 and failures[-1]["reason"] == "idp_error"
    assert b"access_denied" in resp.data


@pytest.mark.parametrize("evil", ["https://evil.com/x", "//evil.com/x", "/\\evil.com", "javascript:alert(1)",
                                  "/ok\r\nSet-Cookie: x=1", "http:/evil.com", " /x"])
def test_open_redirect_next(make_app, op, failures, evil):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client, next_url=evil)
    resp = callback(client, op.issue_code(url))
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_rfc9207_iss_parameter(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    params = op.issue_code(url)
    resp = callback(client, dict(params, iss="https://evil.example.com"))
    assert resp.status_code == 400 and failures[-1]["reason"] == "issuer_mismatch"
    # the state was not consumed by the forged response: the real one still works
    assert callback(client, dict(params, iss=op.issuer)).status_code == 302


def test_rfc9207_required_when_advertised(make_app, op, failures):
    op.extra_metadata = {"authorization_response_iss_parameter_supported": True}
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    params = op.issue_code(url)
    resp = callback(client, params)  # iss missing
    assert resp.status_code == 400 and failures[-1]["reason"] == "issuer_mismatch"


def test_key_rotation_mid_run(make_app, op, failures, clock):
    app = make_app(oidc_config(op, jwksRefreshCooldown=30))
    client = app.test_client()
    url = start_login(client)
    assert callback(client, op.issue_code(url)).status_code == 302
    hits = op.jwks_hits
    op.rotate()                      # IdP rolls its key; old one gone
    client2 = app.test_client()
    url = start_login(client2)
    assert callback(client2, op.issue_code(url)).status_code == 302  # unknown kid -> one refetch
    assert op.jwks_hits == hits + 1


def test_unknown_kid_flood_is_rate_limited(make_app, op, failures, clock):
    app = make_app(oidc_config(op, jwksRefreshCooldown=60))
    stranger = RSAKey.generate_key(2048, private=True)
    hits = None
    for i in range(5):
        client = app.test_client()
        url = start_login(client)
        nonce = authorize_params(url)["nonce"]
        token = op.sign(op.id_claims(nonce), key=stranger, header={"kid": f"made-up-{i}"})
        resp = callback(client, op.issue_code(url, id_token=token))
        assert resp.status_code == 400
        if hits is None:
            hits = op.jwks_hits
    assert op.jwks_hits == hits  # no refetch per attempt inside the cooldown
    clock.advance(61)
    client = app.test_client()
    url = start_login(client)
    token = op.sign(op.id_claims(authorize_params(url)["nonce"]), key=stranger, header={"kid": "again"})
    callback(client, op.issue_code(url, id_token=token))
    assert op.jwks_hits == hits + 1


def test_discovery_cached_with_ttl(make_app, op, failures, clock):
    app = make_app(oidc_config(op, discoveryTtl=100))
    client = app.test_client()
    start_login(client)
    n = op.discovery_hits
    start_login(client)
    assert op.discovery_hits == n
    clock.advance(101)
    start_login(client)
    assert op.discovery_hits == n + 1


def test_idp_unreachable_gives_503(make_app, op, failures):
    op.down = True
    app = make_app(oidc_config(op))
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/me")
    assert resp.status_code == 503 and b"Traceback" not in resp.data
    assert failures[-1]["reason"] == "idp_unavailable"


def test_last_good_discovery_kept_while_idp_down(make_app, op, failures, clock):
    app = make_app(oidc_config(op, discoveryTtl=10))
    client = app.test_client()
    start_login(client)
    op.down = True
    clock.advance(11)
    assert client.get("/sso/op/login?next=/").status_code == 302


def test_token_endpoint_refusal_is_400(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, {"code": "never-issued", "state": authorize_params(url)["state"]})
    assert resp.status_code == 400 and failures[-1]["reason"] == "token_exchange_failed"


def test_session_id_rotated_at_login(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    before = client.get_cookie("ccsso_session").value
    assert callback(client, op.issue_code(url)).status_code == 302
    after = client.get_cookie("ccsso_session").value
    assert before != after
    # the pre-login id is dead: a fixated cookie does not carry the sign-in
    other = app.test_client()
    other.set_cookie("ccsso_session", before)
    assert other.get("/me").status_code == 302


def test_tokens_never_in_cookie(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url, access_token="AT-SECRET-VALUE"))
    cookies = resp.headers.getlist("Set-Cookie")
    assert cookies and all("AT-SECRET" not in c and "eyJ" not in c for c in cookies)
    assert all("HttpOnly" in c and "SameSite=Lax" in c for c in cookies)


def test_logout_goes_to_end_session_with_hint(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    callback(client, op.issue_code(url))
    resp = log_out(client)  # the confirm page, then its form (POST with the CSRF token)
    loc = resp.headers["Location"]
    assert loc.startswith(op.issuer + "/logout?")
    q = authorize_params(loc)
    assert q["id_token_hint"].count(".") == 2 and q["post_logout_redirect_uri"].endswith("/sso/logged-out")
    assert client.get("/me").status_code == 302


@pytest.mark.parametrize("params", [
    {"state": "x" * 10000, "code": "c"},
    {"state": "\x00\x01", "code": "\u202e"},
    {"error": "<script>alert(1)</script>", "state": "s"},
    {"iss": "", "state": "", "code": ""},
    {},
])
def test_garbage_callbacks_are_4xx_not_500(make_app, op, failures, params):
    app = make_app(oidc_config(op))
    client = app.test_client()
    start_login(client)
    resp = callback(client, params)
    assert resp.status_code == 400
    assert b"<script>alert" not in resp.data


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9.e30.", "x" * 20000,
                                   _b64({"alg": "RS256", "kid": ["list"]}) + ".e30.sig",
                                   _b64(["not", "an", "object"]) + ".e30.sig"])
def test_malformed_id_tokens_are_refused(make_app, op, failures, token):
    _, client, resp = _login_with(make_app, op, failures, token=token)
    _assert_refused(resp, client, failures, "invalid_token")


def test_store_failure_while_establishing_session_is_503_and_audited(make_app, op, failures, clock):
    # the session record and its index entries failing: tests/sessions/test_signin_store_write.py
    from flask_ccsso.exceptions import StoreUnavailable
    from flask_ccsso.stores import MemoryStore

    class Flaky(MemoryStore):
        broken = False

        def set_add(self, *a, **kw):
            if self.broken:
                raise StoreUnavailable()
            return super().set_add(*a, **kw)

        def pop(self, *a, **kw):  # the pending sign-in, taken by the callback
            if self.broken:
                raise StoreUnavailable()
            return super().pop(*a, **kw)

    store = Flaky(clock)
    app = make_app(oidc_config(op), store=store)
    client = app.test_client()
    url = start_login(client)
    params = op.issue_code(url)
    store.broken = True
    resp = callback(client, params)
    assert resp.status_code == 503 and b"Traceback" not in resp.data
    assert failures[-1]["reason"] == "store_unavailable"
    assert client.get("/me").status_code == 302


def test_callback_without_the_session_cookie_explains_the_likely_cause(make_app, op, failures):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    client.delete_cookie("ccsso_session")  # e.g. a Secure cookie over plain http, or another host name
    resp = callback(client, op.issue_code(url))
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_mismatch"
    assert b"cookieSecure" in resp.data and b"host name" in resp.data
