"""The example portal (example_app) driven through the test client, signing in at its mounted dev IdP.

The ``example_portal`` fixture (a live server around the app) lives in tests/conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Flask

from tests.support.clock import Clock


@dataclass
class Portal:
    app: Flask
    base: str
    clock: Clock

    def client(self) -> Any:
        return self.app.test_client()


def submit_idp_form(client: Any, page: Any, username: str) -> Any:
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
        resp = submit_idp_form(client, page, username)
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


def bearer_token(portal: Portal, username: str, scope: str = "openid profile email migration:write") -> str:
    """An access token from the dev IdP, fetched as an API client would."""
    client = portal.client()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = f"{portal.base}/sso/dev/callback"
    page = client.get("/devidp/authorize", query_string={
        "response_type": "code", "client_id": "portal", "redirect_uri": redirect_uri, "scope": scope,
        "state": "s", "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    resp = submit_idp_form(client, page, username)
    code = parse_qs(urlsplit(resp.location).query)["code"][0]
    token = client.post("/devidp/token", data={"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": redirect_uri, "code_verifier": verifier},
                        auth=("portal", "dev-secret"))
    assert token.status_code == 200, token.get_data(as_text=True)
    return str(token.get_json()["access_token"])
