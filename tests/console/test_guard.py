"""The console's one guard: the console skill (sensitive), browser sessions only, CSRF on every change."""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.testing import listen_to
from tests.support.console import OPERATOR, OPERATOR_SKILL, PERSON, console_config

PAGES = ["/sso-console/", "/sso-console/sessions", "/sso-console/audit", "/sso-console/charts",
         "/sso-console/skills", "/sso-console/providers"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_an_operator(console_app: Any, path: str) -> None:
    client = console_app().test_client(identity=OPERATOR)
    resp = client.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", PAGES)
def test_a_person_without_the_skill_is_refused_and_audited(console_app: Any, path: str) -> None:
    client = console_app().test_client(identity=PERSON)
    with listen_to(signals.permission_denied) as denied:
        resp = client.get(path, headers={"Accept": "text/html"})
    assert resp.status_code == 403
    assert "olivia" not in resp.get_data(as_text=True)
    assert denied and denied[0].kwargs["skill"] == OPERATOR_SKILL


def test_nobody_signed_in_is_sent_to_sign_in(console_app: Any) -> None:
    resp = console_app().test_client().get("/sso-console/sessions", headers={"Accept": "text/html"})
    assert resp.status_code == 302
    assert "/sso/" in resp.headers["Location"]


def test_a_stale_operator_sign_in_is_asked_to_step_up(console_app: Any, clock: Any) -> None:
    app = console_app()
    client = app.test_client(identity={**OPERATOR, "auth_time": clock() - 3600})
    with listen_to(signals.stepup_required) as asked:
        resp = client.get("/sso-console/", headers={"Accept": "text/html"})
    assert resp.status_code == 302
    assert asked and asked[0].kwargs["skill"] == OPERATOR_SKILL


def test_a_bearer_token_is_refused_even_before_it_is_checked(console_app: Any) -> None:
    client = console_app().test_client()
    with listen_to(signals.permission_denied) as denied:
        resp = client.get("/sso-console/", headers={"Authorization": "Bearer x.y.z", "Accept": "application/json"})
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "browser_only"
    assert denied[0].kwargs["reason"] == "browser_only"


def test_chart_library_is_served_from_the_package(console_app: Any) -> None:
    client = console_app().test_client(identity=OPERATOR)
    with client.get("/sso-console/static/console.css") as resp:
        assert resp.status_code == 200 and b"--accent" in resp.data


@pytest.mark.parametrize(("console", "key"), [
    ({"skill": None}, "console.skill"),
    ({"skill": "nope"}, "console.skill"),
    ({"skill": "database-migration"}, "console.skill"),  # not sensitive
    ({"urlPrefix": "no-slash"}, "console.urlPrefix"),
])
def test_bad_console_config_fails_at_start_up_naming_the_key(make_app: Any, op: Any, console: dict[str, Any],
                                                              key: str) -> None:
    cfg = console_config(op)
    cfg["console"].update(console)
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == key


def test_a_skill_granted_to_everyone_is_refused_as_the_console_skill(make_app: Any, op: Any) -> None:
    cfg = console_config(op)
    cfg["skills"][OPERATOR_SKILL].pop("allowedGroups")
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == "console.skill"


def test_the_console_is_not_served_without_its_audit_trail(make_app: Any, op: Any) -> None:
    """Every console action is audited, or there is no console: a ``logging.events`` list
    without ``console.action`` (or audit off) is refused at start-up, naming the fix."""
    cfg = console_config(op)
    cfg["logging"] = {"level": "audit", "events": ["auth.login"], "destinations": [{"type": "logging"}]}
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == "logging.events" and "console.action" in (err.value.fix or "")
    cfg["logging"] = {"level": "off"}
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == "console.enabled"
