"""Deny by default: a skill name that is not configured fails at start-up."""

from __future__ import annotations

import pytest
from flask import Blueprint, Flask

from flask_ccsso import CCSSO, ConfigError, requires_skill, skill_guard
from flask_ccsso.gate.decorators import check_skill_names
from flask_ccsso.stores import MemoryStore
from tests.support.skills import skills_config


def _flask(tmp_path, op, clock, name="startup_app"):
    app = Flask(name, instance_path=str(tmp_path / "inst"))
    app.config.update(SECRET_KEY="x", TESTING=True, CCSSO=skills_config(op))
    return app


def test_unknown_skill_on_view_registered_before_init_app(tmp_path, op, clock):
    app = _flask(tmp_path, op, clock)

    @app.get("/x")
    @requires_skill("database-migraton")
    def x() -> str:
        return "x"

    with pytest.raises(ConfigError) as info:
        CCSSO(app, clock=clock, store=MemoryStore(clock))
    msg = str(info.value)
    assert "database-migraton" in msg and "database-migration" in msg and "security-audit" in msg
    assert info.value.path == "skills.database-migraton"


def test_unknown_skill_on_view_added_after_init_app(make_app, op):
    """Added after init_app (no app context at decoration): refused before the
    app serves anything -- ``check_skill_names`` (also run by check-config)
    names it, and the first request is refused instead of serving the view."""
    app = make_app(skills_config(op))

    @app.get("/y")
    @requires_skill("nope")
    def y() -> str:
        return "y"

    with pytest.raises(ConfigError, match="nope"):
        check_skill_names(app)
    resp = app.test_client().get("/y")
    assert resp.status_code == 500 and b"y" != resp.data
    assert app.test_client().get("/sso/login").status_code == 500  # every request, until fixed


def test_unknown_skill_at_decoration_time_inside_app_context(make_app, op):
    app = make_app(skills_config(op))
    with app.app_context():
        with pytest.raises(ConfigError, match="nope"):
            requires_skill("nope")
        with pytest.raises(ConfigError, match="nope"):
            skill_guard("security-audit", "nope")


def test_unknown_skill_in_blueprint_registered_after_init(make_app, op):
    app = make_app(skills_config(op))
    bp = Blueprint("bad", __name__)

    @bp.get("/z")
    @requires_skill("nope")
    def z() -> str:
        return "z"

    app.register_blueprint(bp)
    with pytest.raises(ConfigError, match="nope"):
        check_skill_names(app)
    assert app.test_client().get("/z").status_code == 500


def test_unknown_skill_in_blueprint_guard(make_app, op, tmp_path, clock):
    app = make_app(skills_config(op))
    bp = Blueprint("guarded", __name__)
    bp.before_request(skill_guard("nope"))

    @bp.get("/g")
    def g_view() -> str:
        return "g"

    app.register_blueprint(bp)
    with pytest.raises(ConfigError, match="nope"):
        check_skill_names(app)
    assert app.test_client().get("/g").status_code == 500

    # and before init_app
    app2 = _flask(tmp_path, op, clock, "startup_app2")
    bp2 = Blueprint("guarded2", __name__)
    requires_skill("also-nope")(bp2)
    bp2.add_url_rule("/h", "h", lambda: "h")
    app2.register_blueprint(bp2)
    with pytest.raises(ConfigError, match="also-nope"):
        CCSSO(app2, clock=clock, store=MemoryStore(clock))


def test_decorated_views_for_other_apps_do_not_break_init(tmp_path, op, clock):
    """Names are checked per app: a view never registered on this app does not count."""

    @requires_skill("only-in-another-app")
    def elsewhere() -> str:  # pragma: no cover - never called
        return ""

    app = _flask(tmp_path, op, clock)
    CCSSO(app, clock=clock, store=MemoryStore(clock))


def test_unconfigured_name_at_request_time_is_refused(make_app, op, clock):
    """Should a name slip past the checks, the request is refused, never let through."""
    from tests.support.skills import JSON, sign_in

    app = make_app(skills_config(op))
    view = requires_skill("security-audit")(lambda: "open door")
    app.add_url_rule("/slip", "slip", view)
    app.test_client().get("/sso/login")  # start-up: the first request ran the start-up checks
    # simulate the name disappearing from the config after start-up
    state = app.extensions["ccsso"]
    skills = dict(state.config.skills)
    del skills["security-audit"]
    object.__setattr__(state.config, "skills", skills)
    client = app.test_client()
    sign_in(client, op, clock, groups=["security-team"], scope="openid security:read")
    resp = client.get("/slip", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["error"] == "skill_not_configured"


def test_bad_names_are_type_errors():
    with pytest.raises(TypeError):
        requires_skill("")
    with pytest.raises(TypeError):
        requires_skill("a", 3)  # type: ignore[call-overload]
