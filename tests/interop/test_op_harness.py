"""Self-tests: the oidc-provider harness works end to end, without flask-ccsso."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from .conftest import BACKCHANNEL_LOGOUT_URI, POST_LOGOUT_REDIRECT_URIS, REDIRECT_URIS
from .op_harness import Browser, LoginFailed, LoginRequired, OPStartError, RealOP, callback_params, pkce_pair

pytestmark = pytest.mark.interop

CALLBACK = REDIRECT_URIS[0]


def _decode(token: str, op: RealOP) -> dict[str, Any]:
    keys = KeySet.import_key_set(op.jwks_public())
    return dict(jwt.decode(token, keys, algorithms=["RS256"]).claims)


def _header(token: str, op: RealOP) -> dict[str, Any]:
    keys = KeySet.import_key_set(op.jwks_public())
    return dict(jwt.decode(token, keys, algorithms=["RS256"]).header)


def _login_and_exchange(
    op: RealOP, browser: Browser, username: str, scope: str = "openid email profile", **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    mfa = kw.pop("mfa", False)
    verifier, challenge = pkce_pair()
    url = op.authorize_url(CALLBACK, scope=scope, code_challenge=challenge, nonce="n-1", state="s-1", **kw)
    callback = browser.login(url, username, mfa=mfa)
    return _exchange(op, callback, verifier)


def _exchange(op: RealOP, callback: str, verifier: str) -> tuple[dict[str, Any], dict[str, Any]]:
    assert callback.startswith(CALLBACK + "?"), callback
    params = callback_params(callback)
    assert params["iss"] == op.issuer
    resp = requests.post(
        op.metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        auth=(op.client_id, op.client_secret),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    return tokens, _decode(tokens["id_token"], op)


def _refresh(op: RealOP, refresh_token: str) -> requests.Response:
    return requests.post(
        op.metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(op.client_id, op.client_secret),
        timeout=10,
    )


def test_discovery_document(real_op: RealOP) -> None:
    meta = requests.get(real_op.discovery_url, timeout=10).json()
    assert meta["issuer"] == real_op.issuer == f"http://127.0.0.1:{real_op.port}"
    for name in ("authorization", "token", "end_session", "introspection", "revocation", "userinfo"):
        assert meta[f"{name}_endpoint"].startswith(real_op.issuer)
    assert meta["jwks_uri"] == f"{real_op.issuer}/jwks"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["backchannel_logout_supported"] is True
    assert meta["backchannel_logout_session_supported"] is True
    assert set(meta["acr_values_supported"]) == {"urn:ccsso:loa1", "urn:ccsso:mfa"}
    assert "groups" in meta["claims_supported"]
    assert real_op.health()["ok"] is True


def test_alice_code_flow_pkce(real_op: RealOP, op_browser: Browser) -> None:
    tokens, claims = _login_and_exchange(
        real_op, op_browser, "alice", scope="openid email profile migration:write security:read"
    )
    assert tokens["token_type"] == "Bearer"
    granted = tokens["scope"].split()
    assert "migration:write" in granted and "security:read" not in granted
    assert {"openid", "email", "profile"} <= set(granted)

    assert claims["iss"] == real_op.issuer
    assert claims["aud"] == "portal"
    assert claims["sub"] == "u-alice"
    assert claims["nonce"] == "n-1"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Admin" and claims["preferred_username"] == "alice"
    assert claims["groups"] == ["database-admins", "senior-developers"]
    assert claims["acr"] == "urn:ccsso:loa1" and claims["amr"] == ["pwd"]
    assert isinstance(claims["auth_time"], int) and abs(claims["auth_time"] - time.time()) < 60
    assert claims["sid"]
    assert _header(tokens["id_token"], real_op)["kid"] == real_op.signing_kid

    at = _decode(tokens["access_token"], real_op)
    assert _header(tokens["access_token"], real_op)["typ"] == "at+jwt"
    assert at["aud"] == "api://portal"
    assert at["client_id"] == "portal" and at["sub"] == "u-alice"
    assert at["scope"].split() == granted
    assert at["groups"] == ["database-admins", "senior-developers"]
    assert at["email"] == "alice@example.com"


def test_denied_scopes_are_dropped(real_op: RealOP, op_browser: Browser) -> None:
    tokens, claims = _login_and_exchange(real_op, op_browser, "dave", scope="openid email migration:write infra:deploy")
    assert tokens["scope"].split() == ["openid", "email"]
    assert claims["groups"] == ["contractors"]
    assert _decode(tokens["access_token"], real_op)["scope"] == "openid email"


def test_groups_without_groups_scope_and_userinfo(real_op: RealOP, op_browser: Browser) -> None:
    tokens, claims = _login_and_exchange(real_op, op_browser, "bob", scope="openid")
    assert claims["groups"] == ["security-team"]
    assert "email" not in claims
    # the default AT is for api://portal: oidc-provider refuses it at userinfo
    me = requests.get(
        real_op.metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert me.status_code == 401


def test_opaque_userinfo_token_mode() -> None:
    with RealOP() as op, Browser(op) as browser:
        op.start(REDIRECT_URIS, jwt_access_tokens=False)
        tokens, _ = _login_and_exchange(op, browser, "carol", scope="openid email infra:deploy")
        assert tokens["access_token"].count(".") == 0
        assert tokens["scope"].split() == ["openid", "email"]  # resource scopes need the JWT AT
        me = requests.get(
            op.metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
        )
        assert me.status_code == 200, me.text
        assert me.json()["groups"] == ["devops-engineers"]
        assert me.json()["email"] == "carol@example.com"


def test_refresh_rotates_and_rereads_groups(real_op: RealOP, op_browser: Browser) -> None:
    tokens, first = _login_and_exchange(real_op, op_browser, "erin", scope="openid email migration:write")
    assert tokens["scope"].split() == ["openid", "email"]
    assert first["groups"] == ["senior-developers"]
    try:
        real_op.set_groups("erin", ["senior-developers", "release-managers"])
        resp = _refresh(real_op, tokens["refresh_token"])
        assert resp.status_code == 200, resp.text
        refreshed = resp.json()
        assert refreshed["refresh_token"] != tokens["refresh_token"]
        claims = _decode(refreshed["id_token"], real_op)
        assert claims["groups"] == ["senior-developers", "release-managers"]
        assert claims["auth_time"] == first["auth_time"]
        assert claims["sub"] == "u-erin" and claims["aud"] == "portal"
        assert _decode(refreshed["access_token"], real_op)["groups"] == ["senior-developers", "release-managers"]
        # the rotated-out refresh token is dead, and replaying it revokes the grant
        replay = _refresh(real_op, tokens["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert _refresh(real_op, refreshed["refresh_token"]).json()["error"] == "invalid_grant"
    finally:
        real_op.set_groups("erin", ["senior-developers"])


def test_prompt_login_and_session_reuse(real_op: RealOP, op_browser: Browser) -> None:
    _, first = _login_and_exchange(real_op, op_browser, "alice")

    verifier, challenge = pkce_pair()
    silent = op_browser.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge))
    _, reused = _exchange(real_op, silent, verifier)
    assert reused["auth_time"] == first["auth_time"] and reused["sid"] == first["sid"]

    time.sleep(1.1)
    with pytest.raises(LoginRequired):
        op_browser.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge, prompt="login"))
    _, again = _login_and_exchange(real_op, op_browser, "alice", prompt="login")
    assert again["auth_time"] > first["auth_time"]

    time.sleep(2.1)  # auth_time has 1 s resolution
    with pytest.raises(LoginRequired):
        op_browser.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge, max_age="1"))
    _, stale = _login_and_exchange(real_op, op_browser, "alice", max_age="1")
    assert stale["auth_time"] > again["auth_time"]

    with Browser(real_op) as fresh:
        with pytest.raises(LoginRequired):
            fresh.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge))
        err = fresh.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge, prompt="none"))
        assert callback_params(err)["error"] == "login_required"


def test_mfa_and_acr_values(real_op: RealOP, op_browser: Browser) -> None:
    _, claims = _login_and_exchange(real_op, op_browser, "bob", mfa=True)
    assert claims["acr"] == "urn:ccsso:mfa" and claims["amr"] == ["pwd", "otp"]

    with Browser(real_op) as weak:
        _, loa1 = _login_and_exchange(real_op, weak, "bob")
        assert loa1["acr"] == "urn:ccsso:loa1"
        _, challenge = pkce_pair()
        stepup = real_op.authorize_url(CALLBACK, code_challenge=challenge, acr_values="urn:ccsso:mfa")
        with pytest.raises(LoginRequired):
            weak.authorize_silently(stepup)
        with pytest.raises(LoginFailed, match="Multi-factor"):
            weak.login(stepup, "bob", mfa=False)
        _, stepped = _login_and_exchange(real_op, weak, "bob", mfa=True, acr_values="urn:ccsso:mfa")
        assert stepped["acr"] == "urn:ccsso:mfa"


def test_bad_password(real_op: RealOP, op_browser: Browser) -> None:
    _, challenge = pkce_pair()
    with pytest.raises(LoginFailed, match="Invalid username or password"):
        op_browser.login(real_op.authorize_url(CALLBACK, code_challenge=challenge), "alice", password="nope")


def test_pkce_required(real_op: RealOP, op_browser: Browser) -> None:
    callback = op_browser.authorize_silently(real_op.authorize_url(CALLBACK))
    params = callback_params(callback)
    assert params["error"] == "invalid_request" and "PKCE" in params["error_description"]


def test_other_client_audience(real_op: RealOP, op_browser: Browser) -> None:
    verifier, challenge = pkce_pair()
    url = real_op.authorize_url(CALLBACK, client_id=real_op.other_client_id, code_challenge=challenge)
    code = callback_params(op_browser.login(url, "alice"))["code"]
    resp = real_op.token_request(
        {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier},
        client="other",
    )
    assert resp.status_code == 200, resp.text
    assert _decode(resp.json()["id_token"], real_op)["aud"] == "other"


def test_concurrent_logins_in_tabs(real_op: RealOP, op_browser: Browser) -> None:
    tabs = []
    for _ in range(4):
        verifier, challenge = pkce_pair()
        url = real_op.authorize_url(CALLBACK, code_challenge=challenge)
        page = op_browser.get(url)
        assert not isinstance(page, str)
        tabs.append((verifier, url, page))
    subs = []
    for verifier, url, _page in reversed(tabs):
        callback = op_browser.login(url, "carol")
        subs.append(_exchange(real_op, callback, verifier)[1]["sub"])
    assert subs == ["u-carol"] * 4


def test_introspection_and_revocation(real_op: RealOP, op_browser: Browser) -> None:
    tokens, _ = _login_and_exchange(real_op, op_browser, "alice")
    auth = (real_op.client_id, real_op.client_secret)
    intro = real_op.metadata["introspection_endpoint"]
    info = requests.post(intro, data={"token": tokens["refresh_token"]}, auth=auth, timeout=10).json()
    assert info["active"] is True and info["sub"] == "u-alice" and info["client_id"] == "portal"
    # quirk: JWT (structured) access tokens cannot be introspected
    jwt_at = requests.post(intro, data={"token": tokens["access_token"]}, auth=auth, timeout=10)
    assert jwt_at.json()["error"] == "unsupported_token_type"
    revoke = requests.post(
        real_op.metadata["revocation_endpoint"], data={"token": tokens["refresh_token"]}, auth=auth, timeout=10
    )
    assert revoke.status_code == 200
    assert requests.post(intro, data={"token": tokens["refresh_token"]}, auth=auth, timeout=10).json() == {
        "active": False
    }


def test_logout_round_trip_and_backchannel(real_op: RealOP, op_browser: Browser) -> None:
    tokens, claims = _login_and_exchange(real_op, op_browser, "alice")
    real_op.clear_backchannel_logouts()
    end = (
        real_op.metadata["end_session_endpoint"]
        + "?"
        + requests.compat.urlencode(
            {
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": POST_LOGOUT_REDIRECT_URIS[1],
                "state": "bye",
            }
        )
    )
    final = op_browser.logout(end)
    assert final.startswith(POST_LOGOUT_REDIRECT_URIS[1])
    assert callback_params(final)["state"] == "bye"

    sent = real_op.backchannel_logouts()
    assert [s["uri"] for s in sent] == [BACKCHANNEL_LOGOUT_URI]
    logout = _decode(sent[0]["logout_token"], real_op)
    assert logout["sub"] == "u-alice" and logout["sid"] == claims["sid"] and logout["aud"] == "portal"
    assert "http://schemas.openid.net/event/backchannel-logout" in logout["events"]
    assert "nonce" not in logout

    # OP session is gone and the refresh token died with it
    _, challenge = pkce_pair()
    with pytest.raises(LoginRequired):
        op_browser.authorize_silently(real_op.authorize_url(CALLBACK, code_challenge=challenge))
    assert _refresh(real_op, tokens["refresh_token"]).status_code == 400


@pytest.fixture
def private_op() -> Iterator[RealOP]:
    op = RealOP().start(REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS, BACKCHANNEL_LOGOUT_URI)
    try:
        yield op
    finally:
        op.stop()


def test_key_rotation_restart(private_op: RealOP) -> None:
    op = private_op
    with Browser(op) as browser:
        tokens, _ = _login_and_exchange(op, browser, "alice")
        old_kid = op.signing_kid
        port = op.port
        assert _header(tokens["id_token"], op)["kid"] == old_kid

        op.restart(rotate_keys=True, keep_old=True)
        assert op.port == port and op.signing_kid != old_kid
        assert [k["kid"] for k in op.jwks_public()["keys"]] == [op.signing_kid, old_kid]
        # state survived the restart: the refresh token still works, now signed by the new key
        resp = _refresh(op, tokens["refresh_token"])
        assert resp.status_code == 200, resp.text
        assert _header(resp.json()["id_token"], op)["kid"] == op.signing_kid

        op.restart(rotate_keys=True)
        assert len(op.jwks_public()["keys"]) == 1
        new_tokens, _ = _login_and_exchange(op, browser, "alice")  # session survived too
        assert _header(new_tokens["id_token"], op)["kid"] == op.signing_kid
        assert op.jwks_private["keys"][0]["kid"] == op.signing_kid and "d" in op.jwks_private["keys"][0]


def test_start_failure_surfaces_stderr() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        op = RealOP()
        with pytest.raises(OPStartError, match="EADDRINUSE"):
            op.start(REDIRECT_URIS, port=busy.getsockname()[1])
        op.stop()
        assert not op.running


def test_backchannel_delivery_and_clock_skew() -> None:
    received: list[str] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append(parse_qs(body)["logout_token"][0])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink = f"http://127.0.0.1:{server.server_address[1]}/bc"
    try:
        with RealOP() as op, Browser(op) as browser:
            op.start(REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS, sink, backchannel_deliver=True, clock_skew_seconds=-600)
            assert abs(op.health()["now"] - (time.time() - 600)) < 5
            _, claims = _login_and_exchange(op, browser, "bob")
            assert abs(claims["iat"] - (time.time() - 600)) < 5
            end = op.endpoint("end_session") + "?" + urlencode({"client_id": op.client_id})
            assert browser.logout(end).startswith(op.issuer)  # no redirect: OP success page
            assert len(received) == 1
            assert _decode(received[0], op)["sid"] == claims["sid"]
            assert op.backchannel_logouts()[0]["delivered"] == 204
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
