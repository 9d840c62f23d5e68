"""Issue 10, item 14: cross-site request forgery on sign-out and on the example's state-changing routes.

Signing out is a state change: only a POST carrying this session's CSRF token
performs it. A GET (the attacker's ``<a>``, ``<img>`` or top-level navigation,
from a browser that sends neither ``Sec-Fetch-Site`` nor ``Origin``) shows a
confirm page and changes nothing. The example's ``/deploy`` POST refuses posts
without the token, with another session's token, or from another origin. The
sign-ins are real (the local OP; the example's dev IdP over loopback HTTP).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.example import Portal, sign_in
from tests.support.local_op import CLIENT_ID
from tests.support.oidc import authorize_params, callback, oidc_config, start_login

ME_JSON = {"Accept": "application/json"}


def csrf_token_in(page: Any) -> str | None:
    """The hidden ``csrf_token`` field a browser would post back (as ``flask_ccsso.testing.csrf_token_in``;
    written out here so that on the old code the attacks fail, not an import)."""
    html = page if isinstance(page, str) else page.get_data(as_text=True)
    m = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', html)
    return m.group(1) if m else None


def signed_in(make_app: Any, op: Any) -> tuple[Any, Any]:
    app = make_app(oidc_config(op))
    client = app.test_client()
    resp = callback(client, op.issue_code(start_login(client)))
    assert resp.status_code == 302
    assert client.get("/me", headers=ME_JSON).status_code == 200
    return app, client


def still_signed_in(client: Any) -> bool:
    return int(client.get("/me", headers=ME_JSON).status_code) == 200


# --------------------------------------------------------------------------- logout

@pytest.mark.parametrize("headers", [
    {},  # an old browser: neither Sec-Fetch-Site nor Origin
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    {"Origin": "null"},
], ids=["no-headers", "typed", "same-origin", "cross-site", "origin-null"])
def test_get_logout_never_ends_the_session(make_app: Any, op: Any, headers: dict[str, str]) -> None:
    _, client = signed_in(make_app, op)
    with listen_to(signals.user_logged_out) as out:
        resp = client.get("/sso/logout", headers=headers)
    assert resp.status_code == 200 and not out
    assert still_signed_in(client)
    # the confirm page: a form posting back with the token, and the library's page headers
    body = resp.get_data(as_text=True)
    assert 'method="post" action="/sso/logout"' in body and csrf_token_in(body)
    assert resp.mimetype == "text/html"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Referrer-Policy"]


def test_get_logout_from_an_api_client_is_405_json(make_app: Any, op: Any) -> None:
    _, client = signed_in(make_app, op)
    resp = client.get("/sso/logout", headers=ME_JSON)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert resp.get_json()["error"] == "method_not_allowed"
    assert still_signed_in(client)


@pytest.mark.parametrize("data, headers", [
    ({}, {}),  # a plain cross-site form post in an old browser: no token, no headers
    ({}, {"Origin": "https://evil.example"}),
    ({"csrf_token": ""}, {}),
    ({"csrf_token": "x" * 43}, {}),
    ({"csrf_token": "A" * 5000}, {}),
], ids=["no-token", "no-token-evil-origin", "empty", "wrong", "huge"])
def test_post_logout_without_the_token_does_not_end_the_session(make_app: Any, op: Any, data: dict[str, str],
                                                                 headers: dict[str, str]) -> None:
    _, client = signed_in(make_app, op)
    with listen_to(signals.permission_denied) as denied, listen_to(signals.user_logged_out) as out:
        resp = client.post("/sso/logout", data=data, headers=headers)
    assert resp.status_code == 400 and not out
    assert still_signed_in(client)
    assert [d.kwargs["reason"] for d in denied] == ["csrf_failed"]
    assert denied[0].kwargs["endpoint"] == "ccsso.logout" and denied[0].kwargs["identity"].subject
    # the browser is offered the real form again; the token is never echoed from the request
    assert csrf_token_in(resp) and "x" * 43 not in resp.get_data(as_text=True)


def test_another_sessions_token_does_not_sign_out(make_app: Any, op: Any) -> None:
    """The attacker's own valid token (from their own session) is not the victim's."""
    app, victim = signed_in(make_app, op)
    attacker = app.test_client()
    callback(attacker, op.issue_code(start_login(attacker)))
    token = csrf_token_in(attacker.get("/sso/logout"))
    assert token
    assert victim.post("/sso/logout", data={"csrf_token": token}).status_code == 400
    assert still_signed_in(victim)


def test_cross_site_post_with_a_stolen_form_token_is_refused(make_app: Any, op: Any) -> None:
    _, client = signed_in(make_app, op)
    token = csrf_token_in(client.get("/sso/logout"))
    resp = client.post("/sso/logout", data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 400 and still_signed_in(client)


def test_post_with_the_token_signs_out_and_ends_the_op_session(make_app: Any, op: Any) -> None:
    """RP-initiated logout still follows: 303 to the OP's end_session with the id_token_hint."""
    _, client = signed_in(make_app, op)
    page = client.get("/sso/logout")
    with listen_to(signals.user_logged_out) as out:
        resp = client.post("/sso/logout", data={"csrf_token": csrf_token_in(page)},
                           headers={"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"})
    assert resp.status_code == 303 and out
    assert resp.headers["Location"].startswith(op.issuer + "/logout?")
    q = authorize_params(resp.headers["Location"])
    assert q["id_token_hint"].count(".") == 2 and q["post_logout_redirect_uri"].endswith("/sso/logged-out")
    assert client.get("/me", headers=ME_JSON).status_code == 401
    # the header form works the same way for fetch(): the X-CSRF-Token header
    _, client = signed_in(make_app, op)
    token = csrf_token_in(client.get("/sso/logout"))
    assert client.post("/sso/logout", headers={"X-CSRF-Token": token}).status_code == 303
    assert client.get("/me", headers=ME_JSON).status_code == 401


def test_the_testing_helper_logs_out(make_app: Any, op: Any) -> None:
    from flask_ccsso.testing import log_out

    _, client = signed_in(make_app, op)
    assert log_out(client).status_code == 303
    assert client.get("/me", headers=ME_JSON).status_code == 401


# --------------------------------------------------------------------------- the example's /deploy

def _deploy_token(client: Any) -> str:
    token = csrf_token_in(client.get("/deploy"))
    assert token
    return token


@pytest.mark.parametrize("data, headers", [
    ({}, {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
    ({}, {}),  # an old browser: no token, no Origin, no Sec-Fetch-Site
    ({"csrf_token": "forged-token-forged-token-forged-token-xxx"}, {}),
], ids=["cross-origin", "no-token-no-headers", "forged-token"])
def test_example_deploy_refuses_forged_posts(example_portal: Portal, data: dict[str, str],
                                             headers: dict[str, str]) -> None:
    client = sign_in(example_portal, "carol")
    _deploy_token(client)  # the page was seen, so the session holds a token
    with listen_to(signals.permission_denied) as denied:
        resp = client.post("/deploy", data={"environment": "production", **data}, headers=headers)
    assert resp.status_code in (400, 403)
    assert "Deployment to production started" not in resp.get_data(as_text=True)
    assert [d.kwargs["reason"] for d in denied] == ["csrf_failed"]
    assert denied[0].kwargs["endpoint"] == "deploy"


def test_example_deploy_refuses_a_valid_token_posted_cross_site(example_portal: Portal) -> None:
    client = sign_in(example_portal, "carol")
    token = _deploy_token(client)
    resp = client.post("/deploy", data={"environment": "production", "csrf_token": token},
                       headers={"Origin": "https://evil.example"})
    assert resp.status_code == 400


def test_example_deploy_with_the_token_deploys(example_portal: Portal) -> None:
    client = sign_in(example_portal, "carol")
    resp = client.post("/deploy", data={"environment": "staging", "csrf_token": _deploy_token(client)},
                       headers={"Origin": example_portal.base, "Sec-Fetch-Site": "same-origin"})
    assert resp.status_code == 200 and "Deployment to staging started" in resp.get_data(as_text=True)


# --------------------------------------------------------------------------- @csrf_protect's bearer exemption

def _prefs_app(make_app: Any, op: Any) -> tuple[Any, Any, list[str]]:
    """A signed-in browser and an app view that changes the *cookie session's*
    state (no skill on it: ``@csrf_protect`` alone guards it)."""
    from flask import request, session

    from flask_ccsso import csrf_protect

    app = make_app(oidc_config(op))
    changed: list[str] = []

    @app.post("/prefs")
    @csrf_protect
    def prefs() -> str:
        changed.append(request.form.get("theme", ""))
        session["theme"] = request.form.get("theme", "")
        return "saved"

    client = app.test_client()
    assert callback(client, op.issue_code(start_login(client))).status_code == 302
    assert still_signed_in(client)
    return app, client, changed


@pytest.mark.parametrize("authorization", ["Bearer x", "bearer  ", "Bearer not-a-real-token", "BEARER a.b.c"],
                         ids=["junk", "empty", "unknown", "fake-jwt"])
def test_a_bearer_header_that_does_not_authenticate_does_not_switch_csrf_off(make_app: Any, op: Any,
                                                                             authorization: str) -> None:
    """Before: any ``Authorization: Bearer ...`` header skipped the check, and the
    view then ran on the cookie's session -- a forged post needed only to add
    the header. The exemption holds only for a token that authenticates."""
    _, client, changed = _prefs_app(make_app, op)
    resp = client.post("/prefs", data={"theme": "evil"}, headers={"Authorization": authorization})
    assert resp.status_code in (302, 400, 401) and resp.get_data(as_text=True) != "saved"
    assert changed == []
    assert still_signed_in(client)


def test_a_valid_bearer_token_still_needs_no_csrf_token(make_app: Any, op: Any, clock: Any) -> None:
    """An API caller with a real access token (no cookie) is not a browser: no CSRF token needed."""
    app, _, changed = _prefs_app(make_app, op)
    now = int(clock.now)
    token = op.sign({"iss": op.issuer, "sub": "u-api", "aud": CLIENT_ID,
                     "exp": now + 600, "iat": now}, header={"typ": "at+jwt"})
    resp = app.test_client().post("/prefs", data={"theme": "api"}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and changed == ["api"]
