"""flask_ccsso.testing: the test client that signs in, listen_to, make_identity."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_ccsso import Identity, current_identity, get_state, login_required, requires_skill, signals
from flask_ccsso.testing import CCSSOTestClient, Record, listen_to, make_identity
from tests.support.oidc import SKILLS

CONFIG = {
    "auth": {"providers": {"okta": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com"}}},
    "skills": dict(SKILLS, **{"infrastructure-deploy": dict(SKILLS["infrastructure-deploy"], sensitive=True)}),
    "session": {"cookieSecure": False},
}


@pytest.fixture
def app(make_app: Any) -> Flask:
    app = make_app(CONFIG)
    app.test_client_class = CCSSOTestClient

    @app.get("/deploy")
    @requires_skill("infrastructure-deploy")
    def deploy() -> str:
        return "deploying"

    @app.get("/whoami")
    @login_required
    def whoami() -> dict[str, Any]:
        ident = current_identity
        return {"subject": ident.subject, "provider": ident.provider, "acr": ident.acr,
                "auth_time": ident.auth_time, "groups": sorted(ident.groups)}

    return app


def test_make_identity_defaults_and_iterables() -> None:
    ident = make_identity(groups=["a", "b"], scopes="migration:write", amr=["pwd", "otp"], acr="urn:mfa")
    assert isinstance(ident, Identity)
    assert ident.subject == "test-user" and ident.email == "test-user@example.com"
    assert ident.groups == frozenset({"a", "b"}) and ident.scopes == frozenset({"migration:write"})
    assert ident.amr == ("pwd", "otp") and ident.acr == "urn:mfa" and ident.auth_time is not None


def test_anonymous_client(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/me").status_code == 302


def test_client_signs_in_with_a_dict(app: Flask, clock: Any) -> None:
    client = app.test_client(identity={"subject": "alice", "groups": ["database-admins"],
                                       "scopes": ["migration:write"], "acr": "urn:ccsso:mfa"})
    who = client.get("/whoami").get_json()
    assert who == {"subject": "alice", "provider": "okta", "acr": "urn:ccsso:mfa", "auth_time": clock.now,
                   "groups": ["database-admins"]}
    assert client.get("/migrations").status_code == 200
    assert client.get("/deploy").status_code == 403


def test_session_is_real_and_server_side(app: Flask) -> None:
    client = app.test_client(identity=make_identity(subject="bob", provider="okta"))
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    stored = get_state(app).session_interface.read_sid(cookie.value)
    assert stored["_ccsso"]["identity"]["subject"] == "bob"
    # the server-side record ends the session: deleting it signs the client out
    get_state(app).session_interface.delete_sid(cookie.value)
    assert client.get("/me").status_code == 302


def test_timeouts_apply_to_the_seeded_session(app: Flask, clock: Any) -> None:
    client = app.test_client(identity={"subject": "carol"})
    assert client.get("/me").status_code == 200
    clock.advance(3601)  # the default idle timeout
    with listen_to(signals.session_expired) as expired:
        assert client.get("/me").status_code == 302
    assert expired[0].kwargs["reason"] == "idle_timeout"


def test_stale_auth_time_asks_for_step_up(app: Flask, clock: Any) -> None:
    client = app.test_client(identity={"subject": "carol", "groups": ["devops-engineers"], "scopes": ["infra:deploy"],
                                       "auth_time": clock.now - 3600})
    resp = client.get("/deploy")
    assert resp.status_code == 302
    assert "/sso/okta/login" in resp.location and "stepup=infrastructure-deploy" in resp.location
    fresh = app.test_client(identity={"subject": "carol", "groups": ["devops-engineers"], "scopes": ["infra:deploy"]})
    assert fresh.get("/deploy").status_code == 200


def test_sign_in_again_and_sign_out(app: Flask) -> None:
    client = app.test_client()
    client.sign_in({"subject": "erin"})
    assert client.get("/me").get_json()["subject"] == "erin"
    client.sign_in({"subject": "frank"})
    assert client.get("/me").get_json()["subject"] == "frank"
    client.sign_out()
    assert client.get("/me").status_code == 302


def test_listen_to_records_sender_and_kwargs(app: Flask) -> None:
    client = app.test_client(identity={"subject": "alice", "groups": ["senior-developers"],
                                       "scopes": ["migration:write"]})
    with listen_to(signals.skill_invoked) as calls:
        client.get("/migrations")
    assert len(calls) == 1
    sender, kwargs = calls[0]
    assert sender is app and isinstance(calls[0], Record)
    assert kwargs["skill"] == "database-migration" and kwargs["identity"].subject == "alice"
    # outside the block nothing more is recorded
    client.get("/migrations")
    assert len(calls) == 1


def test_listen_to_filters_by_sender(app: Flask, make_app: Any) -> None:
    other = make_app(CONFIG)
    other.test_client_class = CCSSOTestClient
    with listen_to(signals.permission_denied, sender=other) as calls:
        app.test_client(identity={"subject": "dave"}).get("/migrations")
        assert calls == []
        other.test_client(identity={"subject": "dave"}).get("/migrations")
    assert len(calls) == 1 and calls[0].sender is other


def test_works_with_server_name(make_app: Any) -> None:
    app = make_app(CONFIG, SERVER_NAME="portal.test:8080")
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity={"subject": "alice"})
    assert client.get("/me").get_json()["subject"] == "alice"
