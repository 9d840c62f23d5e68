"""Review 2: ``OPTIONS`` passes the skill check for CORS preflight -- but it
must never run a protected view's body for an anonymous caller."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from flask_ccsso import requires_skill
from tests.support.oidc import oidc_config


def test_view_that_lists_options_itself_is_not_run_unprotected(make_app: Any, op: Any) -> None:
    app = make_app(oidc_config(op))
    ran: list[str] = []

    @app.route("/danger", methods=["GET", "POST", "OPTIONS"])
    @requires_skill("database-migration")
    def danger() -> str:
        ran.append("view")
        return "secret data"

    bp = Blueprint("admin", __name__)

    @bp.route("/wipe", methods=["POST", "OPTIONS"])
    def wipe() -> str:
        ran.append("bp")
        return "wiped"

    requires_skill("database-migration")(bp)
    app.register_blueprint(bp, url_prefix="/admin")

    client = app.test_client()
    for path in ("/danger", "/admin/wipe"):
        resp = client.options(path)
        assert resp.status_code == 200
        assert b"secret" not in resp.data and b"wiped" not in resp.data
        assert "OPTIONS" in resp.headers.get("Allow", "")
    assert ran == []
    assert client.get("/danger").status_code == 302  # still protected


def test_automatic_options_and_decorators_that_answer_preflight_still_work(make_app: Any, op: Any) -> None:
    app = make_app(oidc_config(op))

    def answers_preflight(view: Any) -> Any:  # like flask_cors.cross_origin
        import functools

        from flask import current_app, request

        @functools.wraps(view)
        def wrapper(*a: Any, **kw: Any) -> Any:
            if request.method == "OPTIONS":
                resp = current_app.make_default_options_response()
            else:
                resp = current_app.make_response(view(*a, **kw))
            resp.headers["Access-Control-Allow-Origin"] = "https://app.example"
            return resp

        wrapper.provide_automatic_options = False  # type: ignore[attr-defined]
        wrapper.required_methods = ["OPTIONS"]  # type: ignore[attr-defined]
        return wrapper

    @app.get("/api/data")
    @requires_skill("database-migration")
    @answers_preflight
    def data() -> str:
        return "data"

    client = app.test_client()
    resp = client.options("/api/data")
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert client.options("/migrations").status_code == 200
