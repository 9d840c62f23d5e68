"""Config: the seed's files load unchanged; bad config fails at start-up with
the key path and the fix."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from flask_ccsso import CCSSO, ConfigError
from flask_ccsso.config import interpolate, parse_config
from flask_ccsso.stores import MemoryStore
from tests.support import DATA

SEEDS = DATA / "seed_configs"
ENV = {"OKTA_CLIENT_ID": "0oa-client", "OKTA_CLIENT_SECRET": "s3cret", "AZURE_TENANT_ID":
       "11111111-2222-3333-4444-555555555555", "AZURE_CLIENT_ID": "azure-client"}


@pytest.fixture(autouse=True)
def seed_env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def _app(tmp_path, **config):
    app = Flask("cfg_test", instance_path=str(tmp_path / "inst"), root_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", **config)
    return app


@pytest.mark.parametrize("name", ["okta.json", "azure-ad.json", "google-saml.json"])
def test_each_seed_auth_file_loads_unchanged(name):
    raw = json.loads((SEEDS / name).read_text())
    cfg = parse_config(raw)
    (prov,) = cfg.providers.values()
    assert prov.type == raw["auth"]["provider"]


def test_okta_seed_values():
    cfg = parse_config(json.loads((SEEDS / "okta.json").read_text()))
    okta = cfg.providers["okta"]
    assert okta.client_id == "0oa-client" and okta.client_secret == "s3cret"
    assert okta.issuer == "https://your-org.okta.com/oauth2/default"
    assert okta.redirect_uri == "http://localhost:8080/callback"


def test_azure_seed_issuer_from_tenant():
    cfg = parse_config(json.loads((SEEDS / "azure-ad.json").read_text()))
    az = cfg.providers["azure-ad"]
    assert az.issuer == f"https://login.microsoftonline.com/{ENV['AZURE_TENANT_ID']}/v2.0"
    assert az.audience == ("api://your-application-id",)
    assert az.client_secret is None  # public client + PKCE
    assert "User.Read" in az.scopes


def test_all_seed_files_together_in_one_app(tmp_path):
    """CCSSO_CONFIG_FILE takes a list: one file per seed block."""
    for f in SEEDS.glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    app = _app(tmp_path, CCSSO_CONFIG_FILE=["okta.json", "skills.json", "session.json", "logging.json"])
    CCSSO(app, store=MemoryStore())
    state = app.extensions["ccsso"]
    assert set(state.config.skills) == {"database-migration", "security-audit", "infrastructure-deploy"}
    assert state.config.session.absolute_timeout == 28800
    assert state.config.session.require_reauthentication_for_sensitive is True
    assert state.config.logging["destination"] == "azure-log-analytics"


def test_same_block_in_two_files_refused(tmp_path):
    (tmp_path / "a.json").write_text((SEEDS / "okta.json").read_text())
    (tmp_path / "b.json").write_text((SEEDS / "okta.json").read_text())
    with pytest.raises(ConfigError, match=r"auth: is defined in more than one"):
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE=["a.json", "b.json"]), store=MemoryStore())


def test_literal_secret_in_file_refused(tmp_path):
    data = json.loads((SEEDS / "okta.json").read_text())
    data["auth"]["clientSecret"] = "hunter2"
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path == "auth.clientSecret" and "${" in str(e.value)
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("mutate,path,fix", [
    (lambda a: a.update(clientID="x"), "auth.clientID", "did you mean 'clientId'"),
    (lambda a: a.update(scopes="openid profile"), "auth.scopes", "JSON list"),
    (lambda a: a.update(scopes=["profile"]), "auth.scopes", "openid"),
    (lambda a: a.update(issuer="http://idp.example.com"), "auth.issuer", "https"),
    (lambda a: a.update(issuer="ftp://x"), "auth.issuer", "full URL"),
    (lambda a: a.update(clockSkew="60"), "auth.clockSkew", "number"),
    (lambda a: a.update(clockSkew=True), "auth.clockSkew", "number"),
    (lambda a: a.update(allowedAlgorithms=["RS256", "HS256"]), "auth.allowedAlgorithms", "asymmetric"),
    (lambda a: a.update(allowedAlgorithms=["none"]), "auth.allowedAlgorithms", "asymmetric"),
    (lambda a: a.update(provider="okat"), "auth.provider", "did you mean 'okta'"),
    (lambda a: a.pop("clientId"), "auth.clientId", "client"),
    (lambda a: a.update(extraAuthorizeParams={"state": "x"}), "auth.extraAuthorizeParams.state", "remove"),
])
def test_bad_auth_names_key_and_fix(mutate, path, fix):
    raw = json.loads((SEEDS / "okta.json").read_text())
    mutate(raw["auth"])
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert e.value.path == path, str(e.value)
    assert fix.lower() in str(e.value).lower()


def test_loopback_http_issuer_allowed():
    raw = {"auth": {"provider": "oidc", "clientId": "c", "issuer": "http://127.0.0.1:9000"}}
    assert parse_config(raw).providers["oidc"].issuer == "http://127.0.0.1:9000"
    raw["auth"]["issuer"] = "http://localhost:9000/realms/x"
    assert parse_config(raw)


def test_missing_env_var_names_key_and_variable(monkeypatch):
    monkeypatch.delenv("OKTA_CLIENT_SECRET")
    with pytest.raises(ConfigError) as e:
        parse_config(json.loads((SEEDS / "okta.json").read_text()))
    assert e.value.path == "auth.clientSecret" and "OKTA_CLIENT_SECRET" in str(e.value)


def test_interpolation_default_and_escape():
    assert interpolate("${NOPE_X:-fallback}", "a", {}) == "fallback"
    assert interpolate("a$${B}c", "a", {}) == "a${B}c"
    assert interpolate(["${A}", {"k": "x${A}y"}], "", {"A": "1"}) == ["1", {"k": "x1y"}]


def test_interpolation_happens_once_not_recursively():
    # a value that itself looks like ${VAR} is not expanded again
    assert interpolate("${A}", "", {"A": "${B}", "B": "secret"}) == "${B}"


def test_skills_validation():
    base = json.loads((SEEDS / "okta.json").read_text())
    with pytest.raises(ConfigError, match=r"skills.x.allowedGroups: is an empty list"):
        parse_config(dict(base, skills={"x": {"allowedGroups": []}}))
    with pytest.raises(ConfigError, match=r"skills.x.allowedNetworks\[0\]"):
        parse_config(dict(base, skills={"x": {"allowedNetworks": ["10.0.0.0/33"]}}))
    with pytest.raises(ConfigError, match=r"skills.x.alowedGroups.*allowedGroups"):
        parse_config(dict(base, skills={"x": {"alowedGroups": ["a"]}}))


def test_session_validation():
    base = json.loads((SEEDS / "okta.json").read_text())
    with pytest.raises(ConfigError, match=r"session.idleTimeout"):
        parse_config(dict(base, session={"idleTimeout": 100, "absoluteTimeout": 50}))
    with pytest.raises(ConfigError, match=r"session.store.url"):
        parse_config(dict(base, session={"store": {"type": "redis"}}))
    with pytest.raises(ConfigError, match=r"session.cookieHostPrefix"):
        parse_config(dict(base, session={"cookieHostPrefix": True, "cookieSecure": False}))


def test_unknown_top_level_block():
    with pytest.raises(ConfigError, match=r"sesion: unknown key.*did you mean 'session'"):
        parse_config({"auth": {}, "sesion": {}})


def test_azure_multi_tenant_refused():
    raw = json.loads((SEEDS / "azure-ad.json").read_text())
    raw["auth"]["tenantId"] = "common"
    with pytest.raises(ConfigError, match=r"auth.tenantId.*multi-tenant"):
        parse_config(raw)


def test_saml_refuses_unsigned_assertions():
    raw = json.loads((SEEDS / "google-saml.json").read_text())
    raw["auth"]["wantAssertionsSigned"] = False
    with pytest.raises(ConfigError, match=r"auth.wantAssertionsSigned"):
        parse_config(raw)


def test_redirect_uri_clash_with_app_route_before_init(tmp_path):
    app = _app(tmp_path, CCSSO={"auth": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com",
                                         "redirectUri": "https://portal.example.com/callback"}})

    @app.get("/callback")
    def mine():
        return "mine"

    with pytest.raises(ConfigError) as e:
        CCSSO(app, store=MemoryStore())
    assert e.value.path == "auth.redirectUri" and "/sso/oidc/callback" in str(e.value)


def test_redirect_uri_clash_with_app_route_after_init(tmp_path, caplog):
    """A clashing route added after init_app is refused before the app serves
    anything: the first request (and every one after it, until fixed) gets a
    500 page and the log names the key and the fix; the view never runs."""
    app = _app(tmp_path, CCSSO={"auth": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com",
                                         "redirectUri": "https://portal.example.com/callback"}})
    CCSSO(app, store=MemoryStore())

    @app.get("/callback")
    def mine():
        return "mine"

    for path in ("/callback", "/elsewhere"):
        with caplog.at_level("ERROR", logger="flask_ccsso"):
            resp = app.test_client().get(path)
        assert resp.status_code == 500 and b"mine" not in resp.data
    assert any("auth.redirectUri" in r.getMessage() for r in caplog.records)


def test_missing_config_and_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="CCSSO: no configuration found"):
        CCSSO(_app(tmp_path), store=MemoryStore())
    app = Flask("x", instance_path=str(tmp_path / "i"))
    app.config["CCSSO"] = {"auth": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com"}}
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        CCSSO(app, store=MemoryStore())


def test_bad_json_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"auth": {,}}')
    with pytest.raises(ConfigError, match=r"not valid JSON .*line 1"):
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="bad.json"), store=MemoryStore())


def test_unknown_algorithm_name_is_a_config_error():
    raw = {"auth": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com",
                    "allowedAlgorithms": ["rs256"]}}
    with pytest.raises(ConfigError, match=r"auth.allowedAlgorithms.*did you mean 'RS256'"):
        parse_config(raw)


def test_missing_config_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.json: does not exist"):
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="nope.json"), store=MemoryStore())
