"""Sign-in against a real, OpenID Certified provider (npm oidc-provider).

The portal under test is a plain Flask app with flask-ccsso; the OP is a
separate node process; the headless Browser drives the OP's own login pages.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import log_out
from tests.support.oidc import SKILLS

from .op_harness import Browser, LoginRequired, RealOP

ALL_SCOPES = ["openid", "profile", "email", "migration:write", "security:read", "infra:deploy"]


def op_config(real_op: RealOP, **over: Any) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": real_op.client_id, "clientSecret": real_op.client_secret,
            "issuer": real_op.issuer, "scopes": ALL_SCOPES, "audience": "api://portal"}
    prov.update(over)
    return {"auth": {"providers": {"op": prov}}, "skills": SKILLS, "session": {"cookieSecure": False}}


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sign_in(client: Any, browser: Browser, user: str, *, next_url: str = "/me", provider: str = "op",
            mfa: bool = False) -> Any:
    resp = client.get(f"/sso/{provider}/login?next={next_url}")
    assert resp.status_code == 302
    callback_url = browser.login(resp.headers["Location"], user, mfa=mfa)
    return client.get(path_of(callback_url))


@pytest.mark.parametrize("user,groups,scopes", [
    ("alice", {"database-admins", "senior-developers"}, {"migration:write"}),
    ("bob", {"security-team"}, {"security:read"}),
    ("carol", {"devops-engineers"}, {"infra:deploy"}),
    ("dave", {"contractors"}, set()),
])
def test_sign_in_shows_groups_and_scopes(make_app, real_op, op_browser, user, groups, scopes):
    app = make_app(op_config(real_op))
    client = app.test_client()
    logins = []
    signals.user_logged_in.connect(lambda s, **kw: logins.append(kw), weak=False)
    resp = sign_in(client, op_browser, user)
    assert resp.status_code == 302 and resp.headers["Location"] == "/me", resp.data
    me = client.get("/me").get_json()
    assert me["email"] == f"{user}@example.com"
    assert set(me["groups"]) == groups
    custom = {"migration:write", "security:read", "infra:deploy"}
    assert set(me["scopes"]) & custom == scopes
    assert logins and logins[-1]["identity"].email == f"{user}@example.com"
    signals.user_logged_in.receivers.clear()


def test_seed_redirect_uri_path_is_served(make_app, real_op, op_browser):
    """The seed's redirectUri (http://localhost:8080/callback) has its own path."""
    app = make_app(op_config(real_op, redirectUri="http://localhost/callback"))
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/me")
    callback_url = op_browser.login(resp.headers["Location"], "alice")
    assert urlsplit(callback_url).path == "/callback"
    assert client.get(path_of(callback_url)).status_code == 302
    assert client.get("/me").get_json()["email"] == "alice@example.com"


def test_several_tabs_against_real_op(make_app, real_op, op_browser):
    app = make_app(op_config(real_op))
    client = app.test_client()
    starts = [client.get(f"/sso/op/login?next=/tab{i}").headers["Location"] for i in range(3)]
    # oidc-provider replaces a client's grant per OP session on every new
    # authorization (revoking older codes), so each tab signs in at the OP
    # with its own user agent; the portal sees three sign-ins in flight
    browsers = [op_browser, Browser(real_op), Browser(real_op)]
    urls = [b.login(u, "alice") for b, u in zip(browsers, starts)]
    for i in (2, 0, 1):
        url = urls[i]
        resp = client.get(path_of(url))
        assert resp.status_code == 302 and resp.headers["Location"] == f"/tab{i}"


def test_rfc9207_iss_from_real_op_is_checked(make_app, real_op, op_browser):
    app = make_app(op_config(real_op))
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/me")
    callback_url = op_browser.login(resp.headers["Location"], "alice")
    assert "iss=" in callback_url
    tampered = callback_url.replace("iss=http", "iss=https")
    assert client.get(path_of(tampered)).status_code == 400
    assert client.get(path_of(callback_url)).status_code == 302


def test_audience_of_another_client_refused(make_app, real_op, op_browser):
    """A code issued to another client cannot be redeemed as ours."""
    app = make_app(op_config(real_op, clientId=real_op.other_client_id, clientSecret=real_op.other_client_secret))
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/me")
    callback_url = op_browser.login(resp.headers["Location"], "alice")
    app2 = make_app(op_config(real_op))
    client2 = app2.test_client()
    # the victim app never started this sign-in: refused, whatever the code
    assert client2.get(path_of(callback_url)).status_code == 400


def test_logout_ends_idp_session(make_app, real_op, op_browser):
    app = make_app(op_config(real_op))
    client = app.test_client()
    sign_in(client, op_browser, "alice")
    resp = log_out(client)  # the confirm page, then its form (POST with the CSRF token)
    end_session = resp.headers["Location"]
    assert end_session.startswith(real_op.issuer) and "id_token_hint=" in end_session
    assert client.get("/me").status_code == 302
    final = op_browser.logout(end_session)
    assert final.startswith("http://localhost/sso/logged-out")
    # the OP session is gone: a new sign-in shows the login form again
    resp = client.get("/sso/op/login?next=/me")
    with pytest.raises(LoginRequired):
        op_browser.authorize_silently(resp.headers["Location"])


def test_step_up_forces_reauthentication_at_real_op(make_app, real_op, op_browser, clock):
    app = make_app(op_config(real_op))
    client = app.test_client()
    sign_in(client, op_browser, "alice")
    resp = client.get("/sso/op/login?next=/me&stepup=database-migration")
    loc = resp.headers["Location"]
    assert "prompt=login" in loc and "max_age=" in loc
    time.sleep(1.1)  # oidc-provider's auth_time has one-second resolution
    callback_url = op_browser.login(loc, "alice")  # the OP really shows its login form again
    assert client.get(path_of(callback_url)).status_code == 302


def test_key_rotation_without_restart_of_the_portal(make_app, op_browser):
    op = RealOP()
    from .conftest import BACKCHANNEL_LOGOUT_URI, POST_LOGOUT_REDIRECT_URIS, REDIRECT_URIS

    op.start(REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS, BACKCHANNEL_LOGOUT_URI)
    try:
        app = make_app(op_config(op))
        b1 = Browser(op)
        c1 = app.test_client()
        assert sign_in(c1, b1, "alice").status_code == 302
        old_kid = op.signing_kid
        op.restart(rotate_keys=True)
        assert op.signing_kid != old_kid
        b2 = Browser(op)
        c2 = app.test_client()
        assert sign_in(c2, b2, "bob").status_code == 302
        assert c2.get("/me").get_json()["email"] == "bob@example.com"
    finally:
        op.stop()
