"""Token refresh, group changes and back-channel logout against a real OP (issue 5).

The portal refreshes its session's tokens at the real ``oidc-provider``,
which rotates refresh tokens, re-reads the person's groups on every refresh
(``real_op.set_groups``), revokes grants at its revocation endpoint and emits
back-channel logout tokens on RP-initiated logout.

Time: the extension runs on the ``clock`` fixture. The OP's access tokens live
3600 s; with ``refreshWindow`` 3500 a session's token is inside the window
once the extension's clock has moved 100 s or more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet

from flask_ccsso import reasons, requires_skill, signals
from flask_ccsso.sessions import SESSION_KEY
from flask_ccsso.testing import listen_to, log_out
from tests.support.oidc import SKILLS

from .conftest import POST_LOGOUT_REDIRECT_URIS
from .op_harness import Browser, RealOP
from .test_oidc_interop import path_of, sign_in

ALL_SCOPES = ["openid", "profile", "email", "migration:write", "security:read", "infra:deploy"]
ALICE_GROUPS = ["database-admins", "senior-developers"]
REFRESH_WINDOW = 3500
INTO_WINDOW = 200  # seconds of extension clock that put a fresh token inside the window


def op_config(real_op: RealOP, **session: Any) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": real_op.client_id, "clientSecret": real_op.client_secret,
            "issuer": real_op.issuer, "scopes": ALL_SCOPES, "audience": "api://portal"}
    return {"auth": {"providers": {"op": prov}}, "skills": SKILLS,
            "session": {"cookieSecure": False, "refreshWindow": REFRESH_WINDOW, **session}}


@pytest.fixture
def app(make_app: Any, real_op: RealOP) -> Flask:
    return make_app(op_config(real_op))


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def restore_alice(real_op: RealOP) -> Iterator[None]:
    """Whatever a test does to alice's groups at the OP is undone."""
    try:
        yield
    finally:
        real_op.set_groups("alice", ALICE_GROUPS)


def record(app: Flask, client: Any) -> dict[str, Any]:
    """The server-side session record of ``client`` (flask-ccsso's part)."""
    cookie = client.get_cookie("ccsso_session")
    assert cookie is not None, "not signed in"
    data = app.session_interface.read_sid(cookie.value)  # type: ignore[attr-defined]
    assert data is not None
    return dict(data[SESSION_KEY])


def signed_in(client: Any, browser: Browser, user: str) -> None:
    resp = sign_in(client, browser, user)
    assert resp.status_code == 302 and resp.headers["Location"] == "/me", resp.data


def claims_of(real_op: RealOP, token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, KeySet.import_key_set(real_op.jwks_public()), algorithms=["RS256"]).claims)


def op_refresh(real_op: RealOP, refresh_token: str) -> Any:
    return real_op.token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})


def assert_sent_to_sign_in(resp: Any, next_url: str = "/me") -> None:
    assert resp.status_code == 302, resp.data
    loc = urlsplit(resp.headers["Location"])
    assert loc.path == "/sso/login" and parse_qs(loc.query)["next"] == [next_url], resp.headers["Location"]


# ------------------------------------------------------------------ refresh and rotation

def test_refresh_rotates_and_the_rotated_token_keeps_working(app, client, real_op, op_browser, clock):
    signed_in(client, op_browser, "alice")
    first = record(app, client)
    rt0 = first["tokens"]["refresh_token"]
    assert rt0 and first["rev"] == 0
    assert first["tokens"]["expires_at"] == pytest.approx(clock() + 3600, abs=5)

    # outside the window: no call to the OP
    with listen_to(signals.token_refreshed) as refreshed:
        assert client.get("/me").status_code == 200
    assert refreshed == []

    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed:
        assert client.get("/me").get_json()["email"] == "alice@example.com"
    assert len(refreshed) == 1
    assert refreshed[0].kwargs["provider"] == "op"
    assert refreshed[0].kwargs["identity"].subject == "u-alice"
    second = record(app, client)
    rt1 = second["tokens"]["refresh_token"]
    assert rt1 and rt1 != rt0  # the OP rotated it
    assert second["rev"] == 1
    assert second["tokens"]["access_token"] != first["tokens"]["access_token"]
    # (the new ID token may be byte-identical to the first: same claims, same
    # iat second, deterministic RS256 -- so it is not compared)
    assert refreshed[0].kwargs["expires_at"] == second["tokens"]["expires_at"] == pytest.approx(clock() + 3600, abs=5)
    # OIDC Core 12.2: a refresh is not a new authentication
    assert second["identity"]["auth_time"] == first["identity"]["auth_time"]
    assert claims_of(real_op, second["tokens"]["id_token"])["auth_time"] == first["identity"]["auth_time"]

    # the new token is outside the window again: nothing happens ...
    with listen_to(signals.token_refreshed) as refreshed:
        assert client.get("/me").status_code == 200
    assert refreshed == []

    # ... until it is inside: the rotated refresh token works for a second refresh
    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed, listen_to(signals.session_expired) as expired:
        assert client.get("/migrations").status_code == 200
    assert len(refreshed) == 1 and expired == []
    third = record(app, client)
    rt2 = third["tokens"]["refresh_token"]
    assert rt2 not in (rt0, rt1) and third["rev"] == 2


def test_revoked_grant_ends_the_session(app, client, real_op, op_browser, clock):
    signed_in(client, op_browser, "alice")
    rt = record(app, client)["tokens"]["refresh_token"]
    # the OP's RFC 7009 revocation endpoint, authenticated as the client
    resp = real_op.http.post(real_op.endpoint("revocation"),
                             data={"token": rt, "token_type_hint": "refresh_token"},
                             auth=(real_op.client_id, real_op.client_secret), timeout=10)
    assert resp.status_code == 200, resp.text
    assert op_refresh(real_op, rt).json()["error"] == "invalid_grant"

    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed, listen_to(signals.session_expired) as expired:
        resp = client.get("/me")
    assert_sent_to_sign_in(resp)
    assert refreshed == []
    assert [r.kwargs["reason"] for r in expired] == [reasons.REFRESH_FAILED]
    assert expired[0].kwargs["identity"].subject == "u-alice"
    # signed out for good: no second attempt at the OP, no loop
    with listen_to(signals.session_expired) as again:
        assert_sent_to_sign_in(client.get("/me"))
        resp = client.get("/migrations", headers={"Accept": "application/json"})
    assert resp.status_code == 401
    assert again == []  # the tombstone's "why" was told once, above
    # and a new sign-in works
    signed_in(client, op_browser, "alice")
    assert client.get("/migrations").status_code == 200


def test_reused_refresh_token_revokes_the_grant_and_ends_the_session(app, client, real_op, op_browser, clock):
    """oidc-provider treats a rotated-out refresh token that comes back as
    theft and revokes the whole grant; the portal's next refresh is refused
    and the session ends (reason refresh_failed), not kept on a dead grant."""
    signed_in(client, op_browser, "alice")
    rt0 = record(app, client)["tokens"]["refresh_token"]
    clock.advance(INTO_WINDOW)
    assert client.get("/me").status_code == 200
    assert record(app, client)["tokens"]["refresh_token"] != rt0
    assert op_refresh(real_op, rt0).json()["error"] == "invalid_grant"  # the replay
    clock.advance(INTO_WINDOW)
    with listen_to(signals.session_expired) as expired:
        assert_sent_to_sign_in(client.get("/me"))
    assert [r.kwargs["reason"] for r in expired] == [reasons.REFRESH_FAILED]


# ------------------------------------------------------------------ group changes at the IdP

def test_removed_from_group_loses_the_skill_at_next_refresh(app, client, real_op, op_browser, clock,
                                                           restore_alice):
    signed_in(client, op_browser, "alice")
    assert client.get("/migrations").status_code == 200

    real_op.set_groups("alice", ["contractors"])
    # until the next refresh the session's identity is what the ID token said
    assert client.get("/migrations").status_code == 200

    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed, listen_to(signals.permission_denied) as denied:
        resp = client.get("/migrations", headers={"Accept": "application/json"})
    assert len(refreshed) == 1 and refreshed[0].kwargs["identity"].groups == frozenset({"contractors"})
    assert resp.status_code == 403, resp.data
    body = resp.get_json()
    assert body["skill"] == "database-migration" and body["condition"] == "allowedGroups"
    assert body["error"] == reasons.MISSING_GROUP
    assert "contractors" not in resp.get_data(as_text=True)
    assert denied[0].kwargs["reason"] == reasons.MISSING_GROUP
    assert client.get("/me").get_json()["groups"] == ["contractors"]
    assert record(app, client)["identity"]["groups"] == ["contractors"]

    # and at the next sign-in (another browser, another OP session)
    with Browser(real_op) as other:
        fresh = app.test_client()
        signed_in(fresh, other, "alice")
        assert fresh.get("/me").get_json()["groups"] == ["contractors"]
        assert fresh.get("/migrations").status_code == 403


def test_removed_from_the_scope_granting_group(app, client, real_op, op_browser, clock, restore_alice):
    """alice leaves database-admins but stays in senior-developers (still an
    allowed group). The OP grants migration:write only to database-admins --
    when the grant is made, at sign-in. A refresh keeps the grant's scopes
    (oidc-provider does not re-run the policy), and the portal uses the scopes
    the token response names: the skill stays until the next sign-in, which no
    longer carries the scope. (Removing someone from *every* allowed group,
    above, takes effect at the refresh.)"""
    signed_in(client, op_browser, "alice")
    real_op.set_groups("alice", ["senior-developers"])
    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed:
        me = client.get("/me").get_json()
    assert len(refreshed) == 1
    assert me["groups"] == ["senior-developers"]
    assert "migration:write" in str(record(app, client)["tokens"]["scope"]).split()
    assert "migration:write" in me["scopes"]
    assert client.get("/migrations").status_code == 200

    with Browser(real_op) as other:
        fresh = app.test_client()
        signed_in(fresh, other, "alice")
        assert "migration:write" not in fresh.get("/me").get_json()["scopes"]
        resp = fresh.get("/migrations", headers={"Accept": "application/json"})
        assert resp.status_code == 403 and resp.get_json()["condition"] == "requiredScopes"


def test_added_to_group_shows_at_refresh_scope_at_next_sign_in(make_app, real_op, op_browser, clock):
    """The other direction: dave joins security-team. His groups follow at
    the next refresh; security:read was asked for at sign-in but not granted
    (the OP grants it to security-team only), and a refresh keeps the
    grant's scopes, so the skill comes with the next sign-in."""
    app = make_app(op_config(real_op))

    @app.get("/audit")
    @requires_skill("security-audit")
    def audit() -> str:
        return "audit ok"

    client = app.test_client()
    try:
        signed_in(client, op_browser, "dave")
        assert client.get("/audit").status_code == 403
        real_op.set_groups("dave", ["contractors", "security-team"])
        clock.advance(INTO_WINDOW)
        resp = client.get("/audit", headers={"Accept": "application/json"})
        assert client.get("/me").get_json()["groups"] == ["contractors", "security-team"]
        assert resp.status_code == 403 and resp.get_json()["condition"] == "requiredScopes"
        with Browser(real_op) as other:
            fresh = app.test_client()
            signed_in(fresh, other, "dave")
            assert fresh.get("/audit").status_code == 200
    finally:
        real_op.set_groups("dave", ["contractors"])


# ------------------------------------------------------------------ back-channel logout

def _logout_tokens_for_portal(real_op: RealOP) -> list[str]:
    out = []
    for entry in real_op.backchannel_logouts():
        claims = claims_of(real_op, entry["logout_token"])
        if claims.get("aud") == real_op.client_id or real_op.client_id in (claims.get("aud") or []):
            out.append(entry["logout_token"])
    return out


def test_backchannel_logout_from_the_real_op(app, real_op, op_browser):
    # two portal sessions in one OP session: this browser's tab A and tab B
    tab_a, tab_b = app.test_client(), app.test_client()
    signed_in(tab_a, op_browser, "alice")
    signed_in(tab_b, op_browser, "alice")  # silent at the OP: same OP session (sid)
    sid_a, sid_b = (record(app, c)["identity"]["session_index"] for c in (tab_a, tab_b))
    assert sid_a and sid_a == sid_b
    real_op.clear_backchannel_logouts()

    # RP-initiated logout at the OP, with the id_token_hint tab A holds
    id_token = record(app, tab_a)["logout"]["id_token"]
    end = real_op.endpoint("end_session") + "?" + urlencode({
        "id_token_hint": id_token, "post_logout_redirect_uri": POST_LOGOUT_REDIRECT_URIS[1]})
    final = op_browser.logout(end)
    assert final.startswith(POST_LOGOUT_REDIRECT_URIS[1])

    tokens = _logout_tokens_for_portal(real_op)
    assert len(tokens) == 1
    logout = claims_of(real_op, tokens[0])
    assert logout["sid"] == sid_a and logout["sub"] == "u-alice"

    # the OP's delivery, replayed by hand to the portal's endpoint
    idp = app.test_client()
    with listen_to(signals.backchannel_logout) as bcl, listen_to(signals.session_revoked) as revoked:
        resp = idp.post("/sso/op/backchannel-logout", data={"logout_token": tokens[0]})
    assert resp.status_code == 200, resp.data
    assert "no-store" in resp.headers["Cache-Control"]
    assert bcl[0].kwargs["count"] == 2 and bcl[0].kwargs["sid"] == sid_a and bcl[0].kwargs["subject"] == "u-alice"
    assert revoked[0].kwargs["reason"] == "backchannel_logout"

    # both portal sessions are gone, and say why
    for tab in (tab_a, tab_b):
        with listen_to(signals.session_expired) as expired:
            assert_sent_to_sign_in(tab.get("/me"))
        assert [r.kwargs["reason"] for r in expired] == [reasons.REVOKED]
        assert_sent_to_sign_in(tab.get("/me"))

    # the same logout token again: a replay
    with listen_to(signals.login_failed) as failed:
        again = idp.post("/sso/op/backchannel-logout", data={"logout_token": tokens[0]})
    assert again.status_code == 400
    body = json.loads(again.get_data(as_text=True))
    assert body["error"] == "invalid_request" and "already used" in body["error_description"]
    assert failed[0].kwargs["reason"] == reasons.INVALID_TOKEN


def test_backchannel_logout_spares_other_op_sessions(app, real_op, op_browser):
    """A logout token names one OP session (sid): the same person's session
    through another browser (another OP session) stays signed in."""
    mine, theirs = app.test_client(), app.test_client()
    signed_in(mine, op_browser, "alice")
    with Browser(real_op) as other:
        signed_in(theirs, other, "alice")
    assert record(app, mine)["identity"]["session_index"] != record(app, theirs)["identity"]["session_index"]
    real_op.clear_backchannel_logouts()
    id_token = record(app, mine)["logout"]["id_token"]
    op_browser.logout(real_op.endpoint("end_session") + "?" + urlencode({
        "id_token_hint": id_token, "post_logout_redirect_uri": POST_LOGOUT_REDIRECT_URIS[1]}))
    (token,) = _logout_tokens_for_portal(real_op)
    assert app.test_client().post("/sso/op/backchannel-logout", data={"logout_token": token}).status_code == 200
    assert_sent_to_sign_in(mine.get("/me"))
    assert theirs.get("/me").status_code == 200


def test_portal_logout_then_backchannel_token_is_harmless(app, client, real_op, op_browser):
    """The usual order: the person signs out at the portal (which sends them
    to the OP's end_session with the id_token_hint), the OP then emits the
    logout token; the portal answers 200 although nothing is left to end."""
    signed_in(client, op_browser, "alice")
    real_op.clear_backchannel_logouts()
    resp = log_out(client)  # the confirm page, then its form (POST with the CSRF token)
    end_session = resp.headers["Location"]
    assert end_session.startswith(real_op.issuer) and "id_token_hint=" in end_session
    assert op_browser.logout(end_session).startswith("http://localhost/sso/logged-out")
    (token,) = _logout_tokens_for_portal(real_op)
    with listen_to(signals.backchannel_logout) as bcl:
        resp = app.test_client().post("/sso/op/backchannel-logout", data={"logout_token": token})
    assert resp.status_code == 200 and bcl[0].kwargs["count"] == 0
    assert_sent_to_sign_in(client.get("/me"))
    # the OP session ended with the logout: signing in again goes through the form
    signed_in(client, op_browser, "alice")
    assert client.get("/me").status_code == 200


# ------------------------------------------------------------------ refresh and freshness

def test_refresh_never_makes_a_session_fresher(make_app, real_op, op_browser, clock):
    """The refreshed ID token keeps the original auth_time (OIDC Core 12.2),
    so a sensitive skill still asks for a step-up after a refresh; after the
    step-up, the new session's tokens refresh as well."""
    skills = {**SKILLS, "infrastructure-deploy": {**SKILLS["infrastructure-deploy"], "sensitive": True,
                                                  "maxAuthAge": 60}}
    app = make_app({**op_config(real_op), "skills": skills})

    @app.get("/deploy")
    @requires_skill("infrastructure-deploy")
    def deploy() -> str:
        return "deploy ok"

    client = app.test_client()
    signed_in(client, op_browser, "carol")
    assert client.get("/deploy").status_code == 200
    auth_time = record(app, client)["identity"]["auth_time"]

    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed, listen_to(signals.stepup_required) as asked:
        resp = client.get("/deploy")
    assert len(refreshed) == 1 and len(asked) == 1
    assert resp.status_code == 302 and "stepup=infrastructure-deploy" in resp.headers["Location"]
    assert record(app, client)["identity"]["auth_time"] == auth_time

    # step up at the OP. The extension's clock goes back to just past the old
    # sign-in's limit: the OP's clock did not move, and the new auth_time
    # must be within 60 s of the extension's clock
    clock.now = auth_time + 60.5
    idp_url = client.get(resp.headers["Location"]).headers["Location"]
    time.sleep(1.1)  # a newer auth_time (one-second resolution)
    resp = client.get(path_of(op_browser.login(idp_url, "carol")))
    assert resp.status_code == 302 and resp.headers["Location"] == "/deploy", resp.data
    assert client.get("/deploy").status_code == 200
    stepped = record(app, client)
    assert stepped["identity"]["auth_time"] > auth_time and stepped["rev"] == 0

    # the stepped-up session has its own, working refresh token
    clock.advance(INTO_WINDOW)
    with listen_to(signals.token_refreshed) as refreshed, listen_to(signals.session_expired) as expired:
        assert client.get("/me").status_code == 200
    assert len(refreshed) == 1 and expired == []
    assert record(app, client)["identity"]["auth_time"] == stepped["identity"]["auth_time"]
