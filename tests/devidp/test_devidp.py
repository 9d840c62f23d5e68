"""The development OpenID provider, driven through Flask's test client alone."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet

from flask_ccsso.devidp import (
    ACR_LOA1,
    ACR_MFA,
    COOKIE_NAME,
    DevClient,
    DevIdP,
    create_devidp_blueprint,
    default_users,
)
from tests.support.clock import Clock

ISSUER = "http://localhost/devidp"
REDIRECT = "http://localhost/callback"
AFTER_LOGOUT = "http://localhost/bye"


@pytest.fixture
def clock() -> Clock:
    """A fixed start, so issued times are known."""
    return Clock(1_700_000_000.0)


@pytest.fixture
def users():
    return default_users()


@pytest.fixture
def app(tmp_path, monkeypatch, clock, users):
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["TESTING"] = True
    DevIdP(
        app,
        issuer=ISSUER,
        enabled=True,
        clock=clock,
        users=users,
        clients=[
            DevClient("portal", "s3cret", [REDIRECT], post_logout_redirect_uris=[AFTER_LOGOUT]),
            DevClient("spa", None, [REDIRECT]),
            DevClient("api", "api-secret", ["http://localhost/unused"]),
        ],
    )
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def authorize(client, challenge: str | None = None, **params):
    args = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": REDIRECT,
        "scope": "openid profile email",
        "state": "st-1",
        "nonce": "n-1",
    }
    if challenge:
        args.update(code_challenge=challenge, code_challenge_method="S256")
    args.update(params)
    args = {k: v for k, v in args.items() if v is not None}
    return client.get("/devidp/authorize", query_string=args)


def submit_login(client, page, username: str, mfa: bool = False):
    assert page.status_code == 200, page.get_data(as_text=True)
    body = page.get_data(as_text=True)
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', body).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    data = {"csrf": csrf, "username": username}
    if mfa:
        data["mfa"] = "1"
    return client.post(action, data=data)


def sign_in(client, username="alice", *, mfa=False, challenge=None, **params):
    """Run /authorize through the sign-in page; return the callback query."""
    verifier, ch = pkce()
    params.setdefault("prompt", "login")  # always show the page, even with a session
    params.setdefault("nonce", secrets.token_urlsafe(8))
    resp = submit_login(client, authorize(client, challenge or ch, **params), username, mfa)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return verifier, query(resp.location)


def exchange(client, code, verifier, *, auth=("portal", "s3cret"), **extra):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return client.post("/devidp/token", data=data, auth=auth)


def jwks(client) -> KeySet:
    return KeySet.import_key_set(client.get("/devidp/jwks").get_json())


def verify(client, token: str):
    return jwt.decode(token, jwks(client), algorithms=["RS256"])


# -- refusing to start -------------------------------------------------------
CLIENTS = [DevClient("portal", "s3cret", [REDIRECT])]


@pytest.mark.parametrize(("enabled", "env"), [(False, "1"), (True, None), (True, "0"), (False, None)])
def test_refuses_without_both_switches(monkeypatch, enabled, env):
    if env is None:
        monkeypatch.delenv("CCSSO_DEVIDP_ENABLED", raising=False)
    else:
        monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", env)
    with pytest.raises(RuntimeError, match="CCSSO_DEVIDP_ENABLED=1"):
        create_devidp_blueprint(issuer=ISSUER, clients=CLIENTS, enabled=enabled)


def test_refuses_non_loopback_issuer(monkeypatch, tmp_path):
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    with pytest.raises(RuntimeError, match="allow_non_loopback"):
        create_devidp_blueprint(issuer="https://idp.example.com/devidp", clients=CLIENTS, enabled=True)
    with pytest.raises(RuntimeError, match="trailing slash"):
        create_devidp_blueprint(issuer="http://127.0.0.1:5000/devidp/", clients=CLIENTS, enabled=True)
    for issuer in ("http://127.0.0.1:5000/devidp", "http://[::1]:5000/devidp", "https://localhost/devidp"):
        create_devidp_blueprint(issuer=issuer, clients=CLIENTS, enabled=True)
    create_devidp_blueprint(
        issuer="https://idp.example.com/devidp", clients=CLIENTS, enabled=True, allow_non_loopback=True
    )


def test_start_warns_and_keeps_key(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    kids = []
    for _ in range(2):
        app = Flask(__name__, instance_path=str(tmp_path))
        with caplog.at_level("WARNING", logger="flask_ccsso.devidp"):
            DevIdP(app, issuer=ISSUER, clients=CLIENTS, enabled=True)
        kids.append(app.test_client().get("/devidp/jwks").get_json()["keys"][0]["kid"])
    assert "DEVELOPMENT IDENTITY PROVIDER" in caplog.text
    assert kids[0] == kids[1]
    assert (tmp_path / "ccsso-devidp-key.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError, match="already registered"):
        DevIdP(app, issuer=ISSUER, clients=CLIENTS, enabled=True)


# -- discovery and keys ------------------------------------------------------
def test_discovery(client):
    meta = client.get("/devidp/.well-known/openid-configuration").get_json()
    assert meta["issuer"] == ISSUER
    for name, path in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/userinfo"),
        ("end_session_endpoint", "/end_session"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
    ]:
        assert meta[name] == ISSUER + path
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert {"openid", "migration:write", "security:read", "infra:deploy"} <= set(meta["scopes_supported"])
    assert {"groups", "auth_time", "acr", "amr", "sid"} <= set(meta["claims_supported"])
    assert meta["acr_values_supported"] == [ACR_LOA1, ACR_MFA]
    keys = client.get("/devidp/jwks").get_json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0]


def test_pages_show_the_red_banner(client):
    body = authorize(client, pkce()[1]).get_data(as_text=True)
    assert "devidp-banner" in body and "DEVELOPMENT IDENTITY PROVIDER" in body
    assert "database-admins" in body  # users are listed with their groups


# -- the code flow -----------------------------------------------------------
def test_full_code_flow_with_pkce(client, clock):
    verifier, cb = sign_in(client, "alice", scope="openid profile email migration:write", nonce="n-1")
    assert cb["state"] == "st-1"
    assert cb["iss"] == ISSUER  # RFC 9207
    resp = exchange(client, cb["code"], verifier)
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["Cache-Control"] == "no-store"
    tokens = resp.get_json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    assert set(tokens["scope"].split()) == {"openid", "profile", "email", "migration:write"}

    id_token = verify(client, tokens["id_token"])
    c = id_token.claims
    assert id_token.header["kid"] == jwks(client).keys[0].kid
    assert c["iss"] == ISSUER and c["aud"] == "portal" and c["azp"] == "portal"
    assert c["sub"] == "00u-dev-alice" and c["email"] == "alice@example.com" and c["name"] == "Alice Admin"
    assert c["groups"] == ["database-admins", "senior-developers"]
    assert c["nonce"] == "n-1" and c["auth_time"] == int(clock.now) and c["sid"]
    assert c["acr"] == ACR_LOA1 and c["amr"] == ["pwd"]
    assert c["exp"] > c["iat"] == int(clock.now)
    assert "at_hash" in c

    access = verify(client, tokens["access_token"])
    a = access.claims
    assert access.header["typ"] == "at+jwt"
    assert a["iss"] == ISSUER and a["aud"] == "api://ccsso-dev" and a["sub"] == "00u-dev-alice"
    assert a["client_id"] == "portal" and a["email"] == "alice@example.com"
    assert set(a["scope"].split()) == {"openid", "profile", "email", "migration:write"}
    assert a["groups"] == ["database-admins", "senior-developers"]
    assert a["jti"] and a["exp"] == a["iat"] + 3600 and "scp" not in a

    info = client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.get_json()["sub"] == "00u-dev-alice"
    assert client.get("/devidp/userinfo").status_code == 401


def test_mfa_sign_in(client):
    verifier, cb = sign_in(client, "bob", mfa=True)
    claims = verify(client, exchange(client, cb["code"], verifier).get_json()["id_token"]).claims
    assert claims["acr"] == ACR_MFA and claims["amr"] == ["pwd", "otp"]


def test_client_secret_post_and_public_client(client):
    verifier, cb = sign_in(client)
    resp = exchange(client, cb["code"], verifier, auth=None, client_id="portal", client_secret="s3cret")
    assert resp.status_code == 200
    verifier, cb = sign_in(client, client_id="spa")
    assert exchange(client, cb["code"], verifier, auth=None, client_id="spa").status_code == 200


def test_wrong_secret_refused(client):
    verifier, cb = sign_in(client)
    resp = exchange(client, cb["code"], verifier, auth=("portal", "nope"))
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"


def test_wrong_or_missing_verifier_refused(client):
    _, cb = sign_in(client)
    resp = exchange(client, cb["code"], pkce()[0])
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"
    _, cb = sign_in(client)
    resp = exchange(client, cb["code"], None)
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "params",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
    ],
)
def test_authorization_without_s256_refused(client, params):
    # Redirected back to the client with an error, and iss (RFC 9207 §2).
    resp = authorize(client, pkce()[1], **params)
    assert resp.status_code == 302
    cb = query(resp.location)
    assert cb["error"] == "invalid_request" and cb["state"] == "st-1" and cb["iss"] == ISSUER


def test_bad_redirect_uri_is_not_followed(client):
    resp = authorize(client, pkce()[1], redirect_uri="http://evil.example/cb")
    assert resp.status_code == 400 and "Location" not in resp.headers


def test_code_is_single_use(client):
    verifier, cb = sign_in(client, scope="openid offline_access")
    first = exchange(client, cb["code"], verifier)
    assert first.status_code == 200
    second = exchange(client, cb["code"], verifier)
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: tokens obtained with a replayed code are revoked.
    refresh = first.get_json()["refresh_token"]
    resp = client.post(
        "/devidp/token", data={"grant_type": "refresh_token", "refresh_token": refresh}, auth=("portal", "s3cret")
    )
    assert resp.status_code == 400


def test_code_expires(client, clock):
    verifier, cb = sign_in(client)
    clock.now += 61
    assert exchange(client, cb["code"], verifier).get_json()["error"] == "invalid_grant"


def test_custom_scopes_dropped_for_user_lacking_them(client):
    verifier, cb = sign_in(client, "dave", scope="openid email migration:write security:read")
    tokens = exchange(client, cb["code"], verifier).get_json()
    assert tokens["scope"].split() == ["openid", "email"]
    assert verify(client, tokens["access_token"]).claims["scope"] == "openid email"
    verifier, cb = sign_in(client, "bob", scope="openid migration:write security:read")
    assert exchange(client, cb["code"], verifier).get_json()["scope"] == "openid security:read"


def test_unknown_scope_refused(client):
    resp = authorize(client, pkce()[1], scope="openid admin:everything")
    assert query(resp.location)["error"] == "invalid_scope"


# -- refresh -----------------------------------------------------------------
def test_refresh_rotates_and_has_current_groups(client, clock, users):
    verifier, cb = sign_in(client, "erin")
    first = exchange(client, cb["code"], verifier).get_json()
    auth_time = verify(client, first["id_token"]).claims["auth_time"]

    users[4].groups.append("database-admins")  # erin is promoted
    clock.now += 600
    resp = client.post(
        "/devidp/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=("portal", "s3cret"),
    )
    assert resp.status_code == 200, resp.get_json()
    second = resp.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    claims = verify(client, second["id_token"]).claims
    assert claims["groups"] == ["senior-developers", "database-admins"]
    assert claims["auth_time"] == auth_time and claims["iat"] == int(clock.now) and "nonce" not in claims
    assert verify(client, second["access_token"]).claims["groups"] == ["senior-developers", "database-admins"]

    # the old refresh token is refused, and its reuse revokes the new one too (RFC 9700 §4.14.2)
    again = client.post(
        "/devidp/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=("portal", "s3cret"),
    )
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    newer = client.post(
        "/devidp/token",
        data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
        auth=("portal", "s3cret"),
    )
    assert newer.status_code == 400


def test_refresh_by_another_client_refused(client):
    verifier, cb = sign_in(client)
    refresh = exchange(client, cb["code"], verifier).get_json()["refresh_token"]
    resp = client.post(
        "/devidp/token", data={"grant_type": "refresh_token", "refresh_token": refresh}, auth=("api", "api-secret")
    )
    assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_grant"


# -- single sign-on, prompt, max_age, acr_values ------------------------------
def test_single_sign_on_then_prompt_login_and_max_age(client, clock):
    verifier, cb = sign_in(client, "alice")
    first = verify(client, exchange(client, cb["code"], verifier).get_json()["id_token"]).claims

    clock.now += 100
    resp = authorize(client, pkce()[1], nonce="n-2")  # SSO: straight back, same auth_time
    assert resp.status_code == 302 and "code" in query(resp.location)

    clock.now += 100
    page = authorize(client, pkce()[1], prompt="login", nonce="n-3")
    assert page.status_code == 200 and "prompt=login" in page.get_data(as_text=True)
    verifier, ch = pkce()
    resp = submit_login(client, authorize(client, ch, prompt="login", nonce="n-4"), "alice")
    after_login = verify(client, exchange(client, query(resp.location)["code"], verifier).get_json()["id_token"]).claims
    assert after_login["auth_time"] == first["auth_time"] + 200
    assert after_login["sid"] != first["sid"]

    clock.now += 50
    resp = authorize(client, pkce()[1], max_age="60", nonce="n-5")  # 50 s old: fine
    assert resp.status_code == 302
    clock.now += 20
    verifier, ch = pkce()
    page = authorize(client, ch, max_age="60", nonce="n-6")  # 70 s old: sign in again
    assert page.status_code == 200 and "max_age=60" in page.get_data(as_text=True)
    resp = submit_login(client, page, "alice")
    claims = verify(client, exchange(client, query(resp.location)["code"], verifier).get_json()["id_token"]).claims
    assert claims["auth_time"] == int(clock.now) == after_login["auth_time"] + 70


def test_prompt_none(client):
    resp = authorize(client, pkce()[1], prompt="none")
    cb = query(resp.location)
    assert cb["error"] == "login_required" and cb["state"] == "st-1" and cb["iss"] == ISSUER
    sign_in(client)
    resp = authorize(client, pkce()[1], prompt="none", nonce="n-7")
    assert "code" in query(resp.location)
    resp = authorize(client, pkce()[1], prompt="none", max_age="0", nonce="n-8")
    assert query(resp.location)["error"] == "login_required"


def test_acr_values_mfa_forces_mfa(client):
    sign_in(client, "carol")  # loa1 session
    verifier, ch = pkce()
    page = authorize(client, ch, acr_values=ACR_MFA, nonce="n-9")
    assert page.status_code == 200 and "required by the application" in page.get_data(as_text=True)
    resp = submit_login(client, page, "carol", mfa=False)  # the page forces MFA anyway
    claims = verify(client, exchange(client, query(resp.location)["code"], verifier).get_json()["id_token"]).claims
    assert claims["acr"] == ACR_MFA


def test_cookie_is_scoped_to_the_idp(client):
    sign_in(client)
    cookie = client.get_cookie(COOKIE_NAME, path="/devidp")
    assert cookie is not None and cookie.http_only and cookie.path == "/devidp"


def test_login_form_needs_csrf(client):
    page = authorize(client, pkce()[1])
    action = html.unescape(re.search(r'action="([^"]+)"', page.get_data(as_text=True)).group(1))
    resp = client.post(action, data={"username": "alice", "csrf": "forged"})
    assert resp.status_code == 400


def test_cancel_is_access_denied(client):
    page = authorize(client, pkce()[1])
    body = page.get_data(as_text=True)
    action = html.unescape(re.search(r'action="([^"]+)"', body).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    cb = query(client.post(action, data={"csrf": csrf, "cancel": "1"}).location)
    assert cb["error"] == "access_denied" and cb["iss"] == ISSUER


# -- logout ------------------------------------------------------------------
def test_end_session_validates_post_logout_redirect_uri(client):
    verifier, cb = sign_in(client)
    id_token = exchange(client, cb["code"], verifier).get_json()["id_token"]

    bad = client.get(
        "/devidp/end_session",
        query_string={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": "http://evil.example/",
        },
    )
    assert bad.status_code == 400 and "Location" not in bad.headers
    assert authorize(client, pkce()[1], prompt="none", nonce="x1").status_code == 302  # still signed in
    assert "code" in query(authorize(client, pkce()[1], prompt="none", nonce="x2").location)

    no_hint = client.get(
        "/devidp/end_session",
        query_string={
            "client_id": "portal",
            "post_logout_redirect_uri": AFTER_LOGOUT,
        },
    )
    assert no_hint.status_code == 400

    good = client.get(
        "/devidp/end_session",
        query_string={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": AFTER_LOGOUT,
            "state": "bye-1",
        },
    )
    assert good.status_code == 302 and good.location == AFTER_LOGOUT + "?state=bye-1"
    resp = authorize(client, pkce()[1], prompt="none", nonce="x3")
    assert query(resp.location)["error"] == "login_required"


def test_end_session_without_hint_asks_first(client):
    sign_in(client)
    page = client.get("/devidp/end_session")
    assert page.status_code == 200 and "Sign out?" in page.get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    done = client.post("/devidp/end_session", data={"csrf": csrf})
    assert done.status_code == 200 and "Signed out" in done.get_data(as_text=True)
    assert query(authorize(client, pkce()[1], prompt="none").location)["error"] == "login_required"


def test_backchannel_logout_token_sent(monkeypatch, tmp_path, clock):
    sent = []
    monkeypatch.setattr("flask_ccsso.devidp.server._deliver_logout_token", lambda uri, tok: sent.append((uri, tok)))
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    app = Flask(__name__, instance_path=str(tmp_path))
    DevIdP(
        app,
        issuer=ISSUER,
        enabled=True,
        clock=clock,
        clients=[
            DevClient("portal", "s3cret", [REDIRECT], backchannel_logout_uri="http://localhost/bcl"),
        ],
    )
    client = app.test_client()
    verifier, cb = sign_in(client)
    id_token = exchange(client, cb["code"], verifier).get_json()["id_token"]
    sid = verify(client, id_token).claims["sid"]
    client.get("/devidp/end_session", query_string={"id_token_hint": id_token})
    for _ in range(100):  # delivered on a background thread
        if sent:
            break
        time.sleep(0.01)
    ((uri, token),) = sent
    claims = verify(client, token).claims
    assert uri == "http://localhost/bcl"
    assert claims["sid"] == sid and claims["aud"] == "portal" and "nonce" not in claims
    assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]


# -- introspection and revocation -------------------------------------------
def test_introspection_and_revocation(client, clock):
    verifier, cb = sign_in(client, "bob", scope="openid security:read")
    tokens = exchange(client, cb["code"], verifier).get_json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]

    assert client.post("/devidp/introspect", data={"token": access}).status_code == 401  # client auth required
    info = client.post("/devidp/introspect", data={"token": access}, auth=("portal", "s3cret")).get_json()
    assert info["active"] is True and info["sub"] == "00u-dev-bob" and info["client_id"] == "portal"
    assert info["scope"] == "openid security:read" and info["aud"] == "api://ccsso-dev"
    assert info["token_type"] == "Bearer"
    # a resource server registered with the same audience may introspect too
    assert client.post("/devidp/introspect", data={"token": access}, auth=("api", "api-secret")).get_json()["active"]
    info = client.post(
        "/devidp/introspect", data={"token": refresh, "token_type_hint": "refresh_token"}, auth=("portal", "s3cret")
    ).get_json()
    assert info["active"] is True and info["token_type"] == "refresh_token"
    garbage = client.post("/devidp/introspect", data={"token": "nope"}, auth=("portal", "s3cret")).get_json()
    assert garbage == {"active": False}

    assert client.post("/devidp/revoke", data={"token": access}, auth=("portal", "s3cret")).status_code == 200
    assert client.post("/devidp/introspect", data={"token": access}, auth=("portal", "s3cret")).get_json() == {
        "active": False
    }
    assert client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {access}"}).status_code == 401

    client.post("/devidp/revoke", data={"token": refresh}, auth=("portal", "s3cret"))
    resp = client.post(
        "/devidp/token", data={"grant_type": "refresh_token", "refresh_token": refresh}, auth=("portal", "s3cret")
    )
    assert resp.status_code == 400

    verifier, cb = sign_in(client, "bob")
    access = exchange(client, cb["code"], verifier).get_json()["access_token"]
    clock.now += 3601
    assert client.post("/devidp/introspect", data={"token": access}, auth=("portal", "s3cret")).get_json() == {
        "active": False
    }


def test_state_is_shared_between_processes(app, tmp_path, monkeypatch, clock):
    """A second app (another gunicorn worker) with the same instance folder redeems codes of the first."""
    other = Flask(__name__, instance_path=app.instance_path)
    DevIdP(other, issuer=ISSUER, enabled=True, clock=clock, clients=[DevClient("portal", "s3cret", [REDIRECT])])
    verifier, cb = sign_in(app.test_client())
    resp = exchange(other.test_client(), cb["code"], verifier)
    assert resp.status_code == 200
    assert jwks(app.test_client()).keys[0].kid == jwks(other.test_client()).keys[0].kid


def _race_for_code(db_path: str, code: str, now: int) -> bool:
    from flask_ccsso.devidp.store import DevStore

    return DevStore(db_path).consume_code(code, "portal", now) is not None


def test_code_redeemed_once_across_processes(tmp_path):
    """Eight processes race for one code; exactly one wins (the gunicorn case)."""
    import multiprocessing

    from flask_ccsso.devidp.store import AuthContext, DevStore

    path = str(tmp_path / "state.sqlite3")
    store = DevStore(path)
    ctx = AuthContext("alice", 1000, ACR_LOA1, ["pwd"], "sid-1")
    store.save_code(
        "the-code",
        client_id="portal",
        redirect_uri=REDIRECT,
        scope="openid",
        nonce=None,
        code_challenge="c" * 43,
        code_challenge_method="S256",
        context=ctx,
        expires_at=2000,
    )
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        wins = pool.starmap(_race_for_code, [(path, "the-code", 1500)] * 8)
    assert sum(wins) == 1


def test_nonce_replay_refused(client):
    sign_in(client, nonce="once")
    cb = query(authorize(client, pkce()[1], nonce="once").location)
    assert cb["error"] == "invalid_request" and cb["iss"] == ISSUER
