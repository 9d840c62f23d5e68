"""The example portal, through Flask's test client, signing in through the mounted dev IdP.

The browser side runs in the test client; the portal's back channel
(discovery, token, JWKS) reaches the dev IdP over real HTTP, served from the
same app by a threaded server on 127.0.0.1 -- exactly as ``flask run`` does.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from werkzeug.serving import make_server

from example_app import create_app
from flask_ccsso import signals
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.conftest import Clock


@dataclass
class Portal:
    app: Flask
    base: str
    clock: Clock

    def client(self) -> Any:
        return self.app.test_client()


@pytest.fixture
def portal(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Portal]:
    holder: dict[str, Flask] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", base)
    monkeypatch.delenv("CCSSO_EXAMPLE_IDP", raising=False)
    monkeypatch.delenv("CCSSO_EXAMPLE_MAX_AUTH_AGE", raising=False)
    clock = Clock()
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "SERVER_NAME": f"127.0.0.1:{server.server_port}",
                      "INSTANCE_PATH": str(tmp_path / "instance")}, clock=clock)
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Portal(app, base, clock)
    finally:
        server.shutdown()
        server.server_close()
        pipeline = app.extensions.get("ccsso_audit")
        if pipeline is not None:
            pipeline.close()


# --------------------------------------------------------------------------- the browser side

def _submit_idp_form(client: Any, page: Any, username: str) -> Any:
    body = page.get_data(as_text=True)
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', body).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    return client.post(action, data={"csrf": csrf, "username": username})


def follow_sign_in(client: Any, start: Any, username: str, *, expect_page: bool = True) -> Any:
    """From a redirect to /sso/dev/login, follow the real hops to the landing page."""
    resp = start
    assert resp.status_code == 302, resp.get_data(as_text=True)
    if "/sso/" in resp.location and "/login" in resp.location:
        resp = client.get(resp.location)  # /sso/login -> /sso/dev/login or /sso/dev/login -> IdP
        if "/sso/dev/login" in resp.location:
            resp = client.get(resp.location)
    assert "/devidp/authorize" in resp.location, resp.location
    page = client.get(resp.location)
    if expect_page:
        assert page.status_code == 200, page.get_data(as_text=True)
        assert "Sign in" in page.get_data(as_text=True)
        resp = _submit_idp_form(client, page, username)
    else:
        resp = page
    assert resp.status_code == 302 and "/sso/dev/callback" in resp.location, resp.get_data(as_text=True)
    resp = client.get(resp.location)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return resp


def sign_in(portal: Portal, username: str, next_url: str = "/") -> Any:
    client = portal.client()
    landing = follow_sign_in(client, client.get(f"/sso/dev/login?{urlencode({'next': next_url})}"), username)
    assert urlsplit(landing.location).path == next_url
    return client


def test_home_page_anonymous(portal: Portal) -> None:
    resp = portal.client().get("/")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert "Sign in" in body and "Development IdP" in body


def test_protected_page_sends_anonymous_to_sign_in(portal: Portal) -> None:
    client = portal.client()
    resp = client.get("/migrations")
    assert resp.status_code == 302
    landing = follow_sign_in(client, resp, "alice")
    assert urlsplit(landing.location).path == "/migrations"
    assert client.get("/migrations").status_code == 200


def test_alice_migrations_yes_security_audit_no(portal: Portal) -> None:
    client = sign_in(portal, "alice")
    home = client.get("/").get_data(as_text=True)
    assert "Welcome, " in home and 'href="/migrations"' in home and 'href="/security/audit"' not in home
    page = client.get("/migrations")
    assert page.status_code == 200 and "2026_11_18_split_accounts_table" in page.get_data(as_text=True)
    with listen_to(signals.permission_denied) as denied:
        forbidden = client.get("/security/audit")
    assert forbidden.status_code == 403
    assert "security-audit" in forbidden.get_data(as_text=True)
    assert denied and denied[0].kwargs["skill"] == "security-audit"
    assert client.get("/deploy").status_code == 403
    access = client.get("/access").get_data(as_text=True)
    assert re.search(r'data-skill="database-migration">.*?class="yes"', access, re.DOTALL)
    assert re.search(r'data-skill="security-audit">.*?class="no"', access, re.DOTALL)


def test_bob_reads_the_audit_trail(portal: Portal) -> None:
    client = sign_in(portal, "bob")
    assert client.get("/migrations").status_code == 403
    page = client.get("/security/audit")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "auth.login" in body and "bob@example.com" in body
    assert "permission.denied" in body  # his refused /migrations just now


def test_carol_deploys_after_step_up(portal: Portal) -> None:
    client = sign_in(portal, "carol")
    assert client.get("/deploy").status_code == 200  # a fresh sign-in is recent enough
    portal.clock.advance(1000)  # older than session.maxAuthAge (900 s)
    with listen_to(signals.stepup_satisfied) as satisfied:
        stale = client.get("/deploy")
        assert stale.status_code == 302, "a stale sign-in must be sent back to the IdP"
        assert "stepup=infrastructure-deploy" in stale.location
        login = client.get(stale.location)
        assert "prompt=login" in login.location and "max_age=" in login.location
        # the IdP shows its sign-in page again, although its own session is alive
        landing = follow_sign_in(client, login, "carol")
    assert urlsplit(landing.location).path == "/deploy"
    assert satisfied and satisfied[0].kwargs["skill"] == "infrastructure-deploy"
    token = csrf_token_in(client.get("/deploy"))
    done = client.post("/deploy", data={"environment": "staging", "csrf_token": token})
    assert done.status_code == 200 and "Deployment to staging started" in done.get_data(as_text=True)


def test_dave_sees_nothing(portal: Portal) -> None:
    client = sign_in(portal, "dave")
    for path in ("/migrations", "/security/audit", "/deploy"):
        assert client.get(path).status_code == 403, path
    access = client.get("/access").get_data(as_text=True)
    assert 'class="yes"' not in access
    home = client.get("/").get_data(as_text=True)
    assert 'href="/migrations"' not in home and 'href="/deploy"' not in home


def test_sign_out_ends_both_sessions(portal: Portal) -> None:
    client = sign_in(portal, "alice")
    token = csrf_token_in(client.get("/"))  # the header's Sign out form
    with listen_to(signals.user_logged_out) as out:
        resp = client.post("/sso/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and "/devidp/end_session" in resp.location
    assert out and out[0].kwargs["idp_logout"] is True
    back = client.get(resp.location)
    assert back.status_code == 302 and back.location.endswith("/sso/logged-out")
    assert client.get("/migrations").status_code == 302
    # the IdP forgot alice too: the next sign-in shows its page again
    resp = client.get("/sso/dev/login?next=/")
    assert client.get(resp.location).status_code == 200


# --------------------------------------------------------------------------- the API, with bearer tokens

def bearer_token(portal: Portal, username: str, scope: str = "openid profile email migration:write") -> str:
    """An access token from the dev IdP, fetched as an API client would."""
    client = portal.client()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = f"{portal.base}/sso/dev/callback"
    page = client.get("/devidp/authorize", query_string={
        "response_type": "code", "client_id": "portal", "redirect_uri": redirect_uri, "scope": scope,
        "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    resp = _submit_idp_form(client, page, username)
    code = parse_qs(urlsplit(resp.location).query)["code"][0]
    token = client.post("/devidp/token", data={"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": redirect_uri, "code_verifier": verifier},
                        auth=("portal", "dev-secret"))
    assert token.status_code == 200, token.get_data(as_text=True)
    return str(token.get_json()["access_token"])


def test_api_with_bearer_token(portal: Portal) -> None:
    token = bearer_token(portal, "alice")
    resp = portal.client().get("/api/migrations", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["caller"] == "alice@example.com" and data["via"] == "bearer"
    assert len(data["migrations"]) == 3


def test_api_refuses_without_the_skill_or_token(portal: Portal) -> None:
    client = portal.client()
    assert client.get("/api/migrations").status_code == 302  # a browser is sent to sign in
    anon = client.get("/api/migrations", headers={"Accept": "application/json"})
    assert anon.status_code == 401 and anon.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.get("/api/migrations", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    token = bearer_token(portal, "dave", scope="openid profile email")
    denied = client.get("/api/migrations", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 403
    assert denied.get_json()["skill"] == "database-migration"


def test_flask_run_port_becomes_the_base_url() -> None:
    """``flask --app example_app run --port 5001`` needs no CCSSO_EXAMPLE_BASE_URL."""
    import click

    from example_app import _flask_run_address

    assert _flask_run_address() is None
    with click.Context(click.Command("run"), info_name="run") as ctx:
        ctx.params.update(host="127.0.0.1", port=5001)
        assert _flask_run_address() == "http://127.0.0.1:5001"
    with click.Context(click.Command("check-config"), info_name="check-config"):
        assert _flask_run_address() is None
