"""Review 2: personal responses must not be stored by shared caches or the
browser's back/forward history, and API calls with a bearer token must not
touch (or create) a browser session."""

from __future__ import annotations

from typing import Any

from flask import make_response, render_template_string

from flask_ccsso import current_identity, requires_skill
from flask_ccsso.testing import CCSSOTestClient
from tests.support.oidc import oidc_config
from tests.support.skills import access_token, bearer

ALICE = {"subject": "u-alice", "groups": ["database-admins"], "scopes": ["migration:write"]}


def _app(make_app: Any, op: Any) -> Any:
    app = make_app(oidc_config(op, audience=["test-client"]))
    app.test_client_class = CCSSOTestClient

    @app.get("/cached")
    @requires_skill("database-migration")
    def cached() -> Any:
        resp = make_response("mine")
        resp.headers["Cache-Control"] = "private, max-age=30"
        return resp

    @app.get("/greeting")
    def greeting() -> str:  # a public page that greets a signed-in person
        return render_template_string("{% if has_skill('database-migration') %}admin {% endif %}{{ who }}",
                                      who=current_identity.email or "stranger")

    return app


def test_signed_in_responses_are_no_store_and_vary_on_cookie(make_app: Any, op: Any) -> None:
    app = _app(make_app, op)
    client = app.test_client(identity=ALICE)
    for path in ("/migrations", "/me", "/greeting"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert "no-store" in resp.headers.get("Cache-Control", ""), path
        assert "Cookie" in resp.headers.get("Vary", ""), path
    # a view's own caching choice is kept
    assert client.get("/cached").headers["Cache-Control"] == "private, max-age=30"


def test_anonymous_public_pages_stay_cacheable(make_app: Any, op: Any) -> None:
    app = _app(make_app, op)
    resp = app.test_client().get("/greeting")
    assert resp.get_data(as_text=True) == "stranger"
    assert "Cache-Control" not in resp.headers


def test_bearer_calls_create_no_session_and_are_no_store(make_app: Any, op: Any, clock: Any) -> None:
    app = _app(make_app, op)
    client = app.test_client()
    token = access_token(op, clock, aud="test-client")
    resp = client.get("/migrations", headers=bearer(token))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers
    assert "no-store" in resp.headers.get("Cache-Control", "")
    assert client.get_cookie(app.config["SESSION_COOKIE_NAME"]) is None
