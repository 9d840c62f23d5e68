"""The extension object: init_app once per app, two apps in one process."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_ccsso import CCSSO, current_identity
from flask_ccsso.stores import MemoryStore
from tests.support.oidc import authorize_params, callback, oidc_config, start_login


def _cfg(issuer, client="c"):
    return {"auth": {"provider": "oidc", "clientId": client, "issuer": issuer}, "session": {"cookieSecure": False}}


def test_factory_pattern_and_double_init(tmp_path):
    sso = CCSSO()
    app = Flask("a", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", CCSSO=_cfg("https://idp.example.com"))
    sso.init_app(app)
    assert "ccsso" in app.extensions
    with pytest.raises(RuntimeError, match="already initialised"):
        sso.init_app(app)


def test_two_apps_with_different_configs(tmp_path):
    sso = CCSSO(store=MemoryStore())
    a = Flask("a", instance_path=str(tmp_path / "a"))
    b = Flask("b", instance_path=str(tmp_path / "b"))
    a.config.update(SECRET_KEY="k", CCSSO=_cfg("https://a.example.com", "client-a"))
    b.config.update(SECRET_KEY="k", CCSSO=_cfg("https://b.example.com", "client-b"))
    sso.init_app(a)
    sso.init_app(b)
    assert a.extensions["ccsso"].providers["oidc"].settings.client_id == "client-a"
    assert b.extensions["ccsso"].providers["oidc"].settings.client_id == "client-b"
    assert not hasattr(sso, "app")


def test_current_identity_anonymous_and_signed_in(make_app, op):
    app = make_app(oidc_config(op))

    @app.get("/whoami")
    def whoami():
        return {"auth": bool(current_identity), "email": current_identity.email}

    client = app.test_client()
    assert client.get("/whoami").get_json() == {"auth": False, "email": None}
    url = start_login(client)
    callback(client, op.issue_code(url))
    assert client.get("/whoami").get_json() == {"auth": True, "email": "alice@example.com"}


def test_login_required_browser_vs_api(make_app, op):
    app = make_app(oidc_config(op))
    client = app.test_client()
    resp = client.get("/me")
    assert resp.status_code == 302 and "/sso/login?next=/me" in resp.headers["Location"]
    resp = client.get("/me", headers={"Accept": "application/json"})
    assert resp.status_code == 401 and resp.get_json()["error"] == "not_authenticated"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_trusted_proxy_builds_https_redirect_uri(make_app, op):
    app = make_app(oidc_config(op), CCSSO_TRUSTED_PROXIES=1)
    client = app.test_client()
    resp = client.get("/sso/op/login?next=/", headers={"X-Forwarded-Proto": "https",
                                                       "X-Forwarded-Host": "portal.example.com"})
    assert authorize_params(resp.headers["Location"])["redirect_uri"] == "https://portal.example.com/sso/op/callback"
    # without the trusted-proxy setting the headers are ignored
    app2 = make_app(oidc_config(op))
    resp = app2.test_client().get("/sso/op/login?next=/", headers={"X-Forwarded-Proto": "https",
                                                                   "X-Forwarded-Host": "evil.example.com"})
    assert authorize_params(resp.headers["Location"])["redirect_uri"] == "http://localhost/sso/op/callback"


def test_unknown_provider_is_400(make_app, op):
    app = make_app(oidc_config(op))
    assert app.test_client().get("/sso/nope/login").status_code == 400
