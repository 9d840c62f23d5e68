"""Hardening of the library's own pages and of its cookie (issue 10, item 16).

* every response of flask-ccsso's own routes -- sign-in chooser, login
  redirect, OIDC callback (whose URL holds the code), errors, the logged-out
  page, SAML metadata, 404s under the prefix -- cannot be framed
  (clickjacking), is not MIME-sniffed and leaks no ``Referer``; headers the
  app set itself are kept; the app's own pages are left alone.
* a Secure session cookie is named ``__Host-...`` by default (a sibling
  subdomain or a plain-http page cannot plant or overwrite it), and signing in
  works with it; plain-http development (``cookieSecure: false``) and an
  explicit opt-out keep the plain name.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.support import DATA
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.oidc import SKILLS, authorize_params, callback, oidc_config, start_login

GOOGLE_METADATA = DATA / "saml" / "google-idp-metadata.xml"
HTTPS = "https://localhost"


def _config(op: Any, **session: Any) -> dict[str, Any]:
    """Two OIDC providers (so the chooser is a page) and a SAML one (metadata)."""
    cfg = oidc_config(op)
    provs = cfg["auth"]["providers"]
    provs["op2"] = {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
                     "introspection": False}
    provs["google"] = {"provider": "saml", "idpMetadata": str(GOOGLE_METADATA),
                       "spEntityId": "https://portal.example.test"}
    cfg["session"] = {"cookieSecure": False, **session}
    return cfg


#: no Referer to another origin (a view of the library may pick same-origin for its own CSRF check)
NO_CROSS_ORIGIN_REFERER = {"no-referrer", "same-origin"}


def _assert_hardened(resp: Any, what: str, referrer: set[str] | None = None) -> None:
    h = resp.headers
    csp = h.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, (what, dict(h))
    assert "default-src 'none'" in csp and "script-src" not in csp, (what, csp)  # no script may run
    assert h.get("X-Frame-Options") == "DENY", what
    assert h.get("X-Content-Type-Options") == "nosniff", what
    assert h.get("Referrer-Policy") in (referrer or NO_CROSS_ORIGIN_REFERER), what


@pytest.fixture
def app(make_app: Any, op: Any) -> Flask:
    return make_app(_config(op))


def test_every_library_page_is_hardened(app: Flask, op: Any) -> None:
    client = app.test_client()
    pages = {
        "chooser": ("/sso/login?choose=1&next=/me", 200),
        "login redirect": ("/sso/op/login?next=/me", 302),
        "logged out": ("/sso/logged-out", 200),
        "unknown provider": ("/sso/nobody/login", 4),
        "callback with a code, refused": ("/sso/op/callback?code=secret-code&state=forged", 400),
        "SAML metadata": ("/sso/google/metadata", 200),
        "no such page under the prefix": ("/sso/no/such/page", 404),
        "JSON error": ("/sso/nobody/metadata", 4),
    }
    for what, (path, status) in pages.items():
        headers = {"Accept": "application/json"} if what == "JSON error" else {}
        resp = client.get(path, headers=headers)
        got = resp.status_code if status > 9 else resp.status_code // 100  # 4: any 4xx
        assert got == status, (what, resp.status_code, resp.get_data(as_text=True)[:300])
        # the callback URL holds the code: its answer must not pass it on in a Referer
        _assert_hardened(resp, what, {"no-referrer"} if "callback" in what else None)
    # the chooser still renders (its inline style is allowed, nothing else is needed)
    page = client.get("/sso/login?choose=1").get_data(as_text=True)
    assert "<style>" in page and "<script" not in page


def test_successful_callback_and_logout_are_hardened(app: Flask, op: Any) -> None:
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url))
    assert resp.status_code == 302 and resp.headers["Location"] == "/me"
    _assert_hardened(resp, "callback redirect (the code is in this URL)", {"no-referrer"})
    assert client.get("/me").status_code == 200
    resp = client.post("/sso/logout", headers={"Sec-Fetch-Site": "same-origin"})
    _assert_hardened(resp, "logout")


def test_library_error_page_on_an_app_route_is_hardened(app: Flask, op: Any) -> None:
    client = app.test_client()
    url = start_login(client)
    # sign in without the scope the skill needs: the library answers 403 on the app's route
    params = op.issue_code(url, scope="openid email")
    assert callback(client, params).status_code == 302
    resp = client.get("/migrations")
    assert resp.status_code == 403
    _assert_hardened(resp, "403 page of a skill check")


def test_app_pages_and_app_headers_are_left_alone(make_app: Any, op: Any) -> None:
    app = make_app(_config(op))

    @app.after_request
    def own_policy(response: Any) -> Any:  # registered after init_app: runs before the library's
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    client = app.test_client()
    home = client.get("/")
    assert "Content-Security-Policy" not in home.headers  # the app's own page: the app's business
    resp = client.get("/sso/logged-out")
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"  # what the app set is kept
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


# --------------------------------------------------------------------------- cookie

def _set_cookie(resp: Any, name: str) -> str:
    for header in resp.headers.getlist("Set-Cookie"):
        if header.startswith(name + "="):
            return str(header)
    raise AssertionError(f"no {name} cookie in {resp.headers.getlist('Set-Cookie')}")


def test_secure_cookie_gets_the_host_prefix_by_default_and_signing_in_works(make_app: Any, op: Any) -> None:
    app = make_app(_config(op, cookieSecure=True))
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-ccsso_session"
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/me", base_url=HTTPS)
    assert resp.status_code == 302
    state_params = authorize_params(resp.headers["Location"])
    assert state_params["client_id"] == CLIENT_ID
    resp = client.get("/sso/op/callback", query_string=op.issue_code(resp.headers["Location"]), base_url=HTTPS)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    cookie = _set_cookie(resp, "__Host-ccsso_session").lower()
    assert "; secure" in cookie and "; path=/" in cookie and "domain=" not in cookie and "httponly" in cookie
    assert client.get("/me", base_url=HTTPS).status_code == 200


@pytest.mark.parametrize(("session", "flask_config"), [
    ({"cookieSecure": False}, {}),                                # plain-http development
    ({"cookieSecure": True, "cookieHostPrefix": False}, {}),      # explicit opt-out
    ({"cookieSecure": True}, {"SESSION_COOKIE_DOMAIN": "example.test"}),  # a Domain cannot carry __Host-
])
def test_plain_name_where_the_prefix_cannot_or_should_not_apply(make_app: Any, op: Any, session: dict[str, Any],
                                                                flask_config: dict[str, Any]) -> None:
    app = make_app(_config(op, **session), **flask_config)
    assert app.config["SESSION_COOKIE_NAME"] == "ccsso_session"


def test_plain_http_development_still_signs_in(make_app: Any, op: Any) -> None:
    app = make_app({**oidc_config(op), "skills": SKILLS})
    client = app.test_client()
    url = start_login(client)
    resp = callback(client, op.issue_code(url))
    assert resp.status_code == 302
    _set_cookie(resp, "ccsso_session")
    assert client.get("/me").status_code == 200
