"""``flask ccsso devidp-token``: a development access token without the browser flow.

The app under test mounts the development IdP *and* is a relying party of it
(as the example portal is). Its back channel (discovery, JWKS) reaches the IdP
over real HTTP on 127.0.0.1, served from the same app by a threaded server,
so the token is checked exactly as a ``curl -H "Authorization: Bearer ..."``
against ``flask run`` would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, jsonify
from joserfc import jwt
from joserfc.jwk import KeySet
from werkzeug.serving import make_server

from flask_ccsso import CCSSO, current_identity, requires_skill
from flask_ccsso.cli import cli
from flask_ccsso.devidp import ACR_LOA1, ACR_MFA, DEFAULT_AUDIENCE, DevClient, DevIdP
from flask_ccsso.stores import MemoryStore
from tests.support.clock import Clock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Setup:
    app: Flask
    base: str
    clock: Clock

    def token(self, *args: str) -> Any:
        """Run ``flask ccsso devidp-token ARGS`` on the app (stdout and stderr kept apart)."""
        return self.app.test_cli_runner().invoke(cli, ["devidp-token", *args])

    def api(self, token: str) -> Any:
        return self.app.test_client().get("/api/migrations", headers={"Authorization": f"Bearer {token}"})


def _serve(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, dict[str, Any]]:
    holder: dict[str, Any] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}", holder


@pytest.fixture
def setup(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    server, base, holder = _serve(monkeypatch)
    clock = Clock(float(int(time.time())))  # whole seconds: issued times compare exactly
    app = Flask("devidp_cli_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        SECRET_KEY="test-secret",
        TESTING=True,
        CCSSO={
            "auth": {
                "providers": {
                    "dev": {
                        "provider": "oidc",
                        "clientId": "portal",
                        "clientSecret": "s3cret",
                        "issuer": f"{base}/devidp",
                        "redirectUri": f"{base}/sso/dev/callback",
                        "audience": DEFAULT_AUDIENCE,
                        "scopes": ["openid", "profile", "email", "migration:write"],
                    }
                }
            },
            "skills": {
                "database-migration": {
                    "allowedGroups": ["database-admins", "senior-developers"],
                    "requiredScopes": ["migration:write"],
                }
            },
            "session": {"cookieSecure": False},
        },
    )
    DevIdP(
        app,
        issuer=f"{base}/devidp",
        enabled=True,
        clock=clock,
        clients=[DevClient("portal", "s3cret", [f"{base}/sso/dev/callback"])],
    )
    CCSSO(app, clock=clock, store=MemoryStore(clock))

    @app.get("/api/migrations")
    @requires_skill("database-migration")
    def api_migrations() -> Any:
        return jsonify(caller=current_identity.email, via=current_identity.via)

    holder["app"] = app
    try:
        yield Setup(app, base, clock)
    finally:
        server.shutdown()
        server.server_close()


def _claims(setup: Setup, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, the signature checked against the IdP's published JWKS."""
    keys = KeySet.import_key_set(setup.app.test_client().get("/devidp/jwks").get_json())
    decoded = jwt.decode(token, keys, algorithms=["RS256"])
    return dict(decoded.header), dict(decoded.claims)


# --------------------------------------------------------------------------- the token works


def test_alice_token_is_accepted_by_the_skill_protected_api(setup: Setup) -> None:
    result = setup.token("--user", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"  # only the token: TOKEN=$(flask ... devidp-token ...) works
    assert token.count(".") == 2 and " " not in token
    assert "DEVELOPMENT IDENTITY PROVIDER" in result.stderr and "never use in production" in result.stderr
    resp = setup.api(token)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"caller": "alice@example.com", "via": "bearer"}


def test_dave_token_is_refused_by_the_skill(setup: Setup) -> None:
    result = setup.token("--user", "dave")
    assert result.exit_code == 0, result.output
    resp = setup.api(result.stdout.strip())
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "missing_group"


def test_the_token_is_the_one_the_token_endpoint_issues(setup: Setup) -> None:
    setup.clock.now += 1234  # auth_time is "now" on the IdP's clock
    result = setup.token("--user", "alice", "--scope", "openid migration:write security:read")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    header, claims = _claims(setup, token)
    idp_key = setup.app.test_client().get("/devidp/jwks").get_json()["keys"][0]
    assert header == {"typ": "at+jwt", "alg": "RS256", "kid": idp_key["kid"]}
    assert claims["iss"] == f"{setup.base}/devidp"
    assert claims["aud"] == DEFAULT_AUDIENCE and claims["client_id"] == "portal"
    assert claims["sub"] == "00u-dev-alice" and claims["email"] == "alice@example.com"
    assert claims["groups"] == ["database-admins", "senior-developers"]
    # security:read is known to the IdP but not allowed for alice: dropped, as at /authorize
    assert claims["scope"] == "openid migration:write"
    assert "security:read" in result.stderr and "dropped" in result.stderr
    assert claims["auth_time"] == claims["iat"] == int(setup.clock.now)
    assert claims["exp"] == claims["iat"] + 3600
    assert claims["acr"] == ACR_LOA1 and claims["amr"] == ["pwd"]
    assert "nonce" not in claims and "at_hash" not in claims  # an access token, not an ID token


def test_default_scope_is_everything_the_user_may_have(setup: Setup) -> None:
    alice = _claims(setup, setup.token("--user", "alice").stdout.strip())[1]
    assert alice["scope"].split() == ["openid", "profile", "email", "groups", "migration:write"]
    dave = _claims(setup, setup.token("--user", "dave").stdout.strip())[1]
    assert dave["scope"].split() == ["openid", "profile", "email", "groups"]


def test_mfa_flag(setup: Setup) -> None:
    claims = _claims(setup, setup.token("--user", "alice", "--mfa").stdout.strip())[1]
    assert claims["acr"] == ACR_MFA and claims["amr"] == ["pwd", "otp"]


def test_without_the_scope_the_skill_is_refused(setup: Setup) -> None:
    result = setup.token("--user", "alice", "--scope", "openid profile")
    assert result.exit_code == 0, result.output
    resp = setup.api(result.stdout.strip())
    assert resp.status_code == 403 and resp.get_json()["error"] == "missing_scope"


def test_the_idp_knows_the_token(setup: Setup) -> None:
    """Stored like a /token answer: introspection, userinfo and revocation see it."""
    token = setup.token("--user", "alice").stdout.strip()
    client = setup.app.test_client()
    info = client.post("/devidp/introspect", data={"token": token}, auth=("portal", "s3cret")).get_json()
    assert info["active"] is True and info["username"] == "alice" and info["scope"].endswith("migration:write")
    me = client.get("/devidp/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.get_json()["sub"] == "00u-dev-alice"
    assert client.post("/devidp/revoke", data={"token": token}, auth=("portal", "s3cret")).status_code == 200
    info = client.post("/devidp/introspect", data={"token": token}, auth=("portal", "s3cret")).get_json()
    assert info == {"active": False}


def test_another_clients_audience_is_not_this_apis(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, setup: Setup
) -> None:
    """--client picks the DevClient, and with it the audience; several clients need --client."""
    idp = setup.app.blueprints["ccsso_devidp"].ccsso_devidp  # type: ignore[attr-defined]
    from flask_ccsso.devidp.models import _AuthlibClient

    other = DevClient("reports", "r", ["http://127.0.0.1/cb"], audience="api://reports")
    monkeypatch.setitem(idp.clients, "reports", _AuthlibClient(other, idp.scopes_supported))
    several = setup.token("--user", "alice")
    assert several.exit_code == 2 and several.stdout == ""
    assert "--client" in several.stderr and "portal" in several.stderr and "reports" in several.stderr
    result = setup.token("--user", "alice", "--client", "reports")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert _claims(setup, token)[1]["aud"] == "api://reports"
    assert setup.api(token).status_code == 401  # wrong audience for this API
    assert setup.api(setup.token("--user", "alice", "--client", "portal").stdout.strip()).status_code == 200


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user", "mallory"], "unknown user 'mallory'"),
        (["--user", "alice", "--client", "nope"], "unknown client 'nope'"),
        (["--user", "alice", "--scope", "openid admin:everything"], "invalid_scope: admin:everything"),
    ],
)
def test_unknown_user_client_or_scope_is_exit_2(setup: Setup, args: list[str], message: str) -> None:
    result = setup.token(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_user_is_required(setup: Setup) -> None:
    result = setup.token()
    assert result.exit_code == 2 and result.stdout == ""


def test_refused_when_the_environment_switch_is_off(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCSSO_DEVIDP_ENABLED")
    result = setup.token("--user", "alice")
    assert result.exit_code == 2 and result.stdout == ""
    assert "CCSSO_DEVIDP_ENABLED=1" in result.stderr and "refuses" in result.stderr
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "true")  # only "1" switches it on, as at start-up
    result = setup.token("--user", "alice")
    assert result.exit_code == 2 and result.stdout == ""


def test_refused_when_the_code_switch_is_off(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    idp = setup.app.blueprints["ccsso_devidp"].ccsso_devidp  # type: ignore[attr-defined]
    monkeypatch.setattr(idp, "enabled", False)
    result = setup.token("--user", "alice")
    assert result.exit_code == 2 and result.stdout == ""
    assert "enabled=True" in result.stderr


def test_refused_on_an_app_without_a_development_idp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    app = Flask("no_devidp", instance_path=str(tmp_path / "instance"))
    result = app.test_cli_runner().invoke(cli, ["devidp-token", "--user", "alice"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "no development IdP is mounted" in result.stderr


# --------------------------------------------------------------------------- the newcomer's shell


def test_example_portal_shell_round_trip(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TOKEN=$(flask --app example_app ccsso devidp-token --user alice)`` in another process,
    then the API of the running portal (same instance folder, same base URL)."""
    from example_app import create_app

    server, base, holder = _serve(monkeypatch)
    instance = str(tmp_path / "instance")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCSSO_", "FLASK_"))}
    env.update(CCSSO_EXAMPLE_BASE_URL=base, CCSSO_EXAMPLE_INSTANCE=instance, PYTHONPATH=ROOT)
    for key in ("CCSSO_EXAMPLE_IDP", "CCSSO_EXAMPLE_MAX_AUTH_AGE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", base)
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "INSTANCE_PATH": instance})
    holder["app"] = app
    command = [sys.executable, "-m", "flask", "--app", "example_app", "ccsso", "devidp-token"]
    try:
        off = subprocess.run(
            [*command, "--user", "alice"], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert off.returncode == 2 and off.stdout == "", off.stderr
        assert "CCSSO_DEVIDP_ENABLED=1" in off.stderr and "Traceback" not in off.stderr
        on = dict(env, CCSSO_DEVIDP_ENABLED="1")
        for user, status in (("alice", 200), ("dave", 403)):
            proc = subprocess.run(
                [*command, "--user", user], check=False, cwd=ROOT, env=on, capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 0, proc.stderr
            token = proc.stdout.strip()
            assert proc.stdout == token + "\n" and token.count(".") == 2
            assert "never use in production" in proc.stderr
            resp = app.test_client().get("/api/migrations", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == status, resp.get_data(as_text=True)
        assert resp.get_json()["skill"] == "database-migration"
    finally:
        server.shutdown()
        server.server_close()
        pipeline = app.extensions.get("ccsso_audit")
        if pipeline is not None:
            pipeline.close()
