"""The console's one guard: the console skill (sensitive), browser sessions only, CSRF on every change."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.config import parse_config
from flask_ccsso.console.recent_sign_in import require_recent_sign_in
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.support.console import OPERATOR, OPERATOR_SKILL, PERSON, console_config
from tests.support.oidc import oidc_config

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


@pytest.mark.parametrize(("skill", "session", "key"), [
    ({"sensitive": False}, {}, "console.skill"),  # not sensitive, no maxAuthAge
    ({}, {"requireReauthenticationForSensitive": False}, "session.requireReauthenticationForSensitive"),
])
def test_a_console_skill_that_never_asks_for_a_recent_sign_in_is_refused(make_app: Any, op: Any,
                                                                        skill: dict[str, Any],
                                                                        session: dict[str, Any], key: str) -> None:
    """By the gate's freshness rule, not the ``sensitive`` flag: a sensitive skill asks for nothing
    once the session switch is off, and then a three-day-old sign-in would run the console."""
    cfg = console_config(op)
    cfg["skills"][OPERATOR_SKILL].pop("maxAuthAge")
    cfg["skills"][OPERATOR_SKILL].update(skill)
    cfg["session"].update(session)
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == key
    assert f"skills.{OPERATOR_SKILL}" in (err.value.fix or "") and "requireSensitiveSkill" in (err.value.fix or "")


def test_a_console_skill_with_its_own_max_auth_age_steps_up_with_the_session_switch_off(
        make_app: Any, op: Any, clock: Any) -> None:
    from flask_ccsso.testing import CCSSOTestClient

    cfg = console_config(op)  # the skill has maxAuthAge 600
    cfg["session"]["requireReauthenticationForSensitive"] = False
    app = make_app(cfg)
    app.test_client_class = CCSSOTestClient
    stale = app.test_client(identity={**OPERATOR, "auth_time": clock() - 3 * 86400})
    with listen_to(signals.stepup_required) as asked:
        resp = stale.get("/sso-console/sessions", headers={"Accept": "text/html"})
    assert resp.status_code == 302 and asked


def test_require_sensitive_skill_false_is_the_explicit_opt_out(make_app: Any, op: Any, clock: Any) -> None:
    from flask_ccsso.testing import CCSSOTestClient

    cfg = console_config(op, requireSensitiveSkill=False)
    cfg["skills"][OPERATOR_SKILL].pop("maxAuthAge")
    cfg["session"]["requireReauthenticationForSensitive"] = False
    app = make_app(cfg)
    app.test_client_class = CCSSOTestClient
    stale = app.test_client(identity={**OPERATOR, "auth_time": clock() - 3 * 86400})
    assert stale.get("/sso-console/", headers={"Accept": "text/html"}).status_code == 200  # as configured


def test_the_example_portals_console_skill_asks_for_a_recent_sign_in(monkeypatch: Any) -> None:
    import json
    from pathlib import Path

    from flask_ccsso.config import parse_config
    from flask_ccsso.console.recent_sign_in import require_recent_sign_in

    monkeypatch.setenv("CCSSO_EXAMPLE_DEV_SECRET", "dev-secret")  # as the example app sets it
    raw = json.loads((Path(__file__).parents[2] / "example_app" / "ccsso.json").read_text())
    cfg = parse_config(raw)
    assert cfg.console.enabled and cfg.console.require_sensitive_skill
    require_recent_sign_in(cfg)  # does not raise


# -- requests another site started ---------------------------------------------------------------

#: a link on another site, followed (SameSite=Lax sends the cookie along)
CROSS_SITE_LINK = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
                   "Sec-Fetch-User": "?1", "Accept": "text/html"}
#: an <img> on a sibling subdomain: same-site, the cookie goes along, and it can repeat at will
SAME_SITE_IMAGE = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image",
                   "Accept": "image/*"}
#: what another site can make the operator's browser ask for: refused filters and ranges are audited,
#: the rest reads the whole table, exports it, or reaches every IdP
FORGED = ["/sso-console/audit?type=x';DROP TABLE ccsso_audit_events;--", "/sso-console/charts?range=<svg>",
          "/sso-console/audit?from=yesterday", "/sso-console/providers", "/sso-console/sessions"]


@pytest.mark.parametrize("path", FORGED)
def test_a_link_from_another_site_runs_nothing_and_offers_the_page(console_app: Any, path: str) -> None:
    client = console_app().test_client(identity=OPERATOR)
    for site in ("cross-site", "same-site"):
        with listen_to(signals.console_action) as actions, listen_to(signals.permission_denied) as denied, \
                listen_to(signals.skill_invoked) as invoked:
            resp = client.get(path, headers={**CROSS_SITE_LINK, "Sec-Fetch-Site": site})
        assert resp.status_code == 403
        assert actions == [] and denied == [] and invoked == []  # not run, not even the skill check
        html = resp.get_data(as_text=True)
        assert 'id="other-site"' in html and "olivia" not in html
        link = re.search(r'id="open-target" href="([^"]+)"', html)
        assert link and unescape(link.group(1)) == path  # the operator's own click comes from this origin
        assert resp.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", FORGED + ["/sso-console/"])
def test_a_sub_request_from_another_site_is_refused_as_csrf(console_app: Any, path: str) -> None:
    client = console_app().test_client(identity=OPERATOR)
    for headers in (SAME_SITE_IMAGE, {**SAME_SITE_IMAGE, "Sec-Fetch-Site": "cross-site"}):
        with listen_to(signals.console_action) as actions, listen_to(signals.permission_denied) as denied:
            resp = client.get(path, headers=headers)
        assert resp.status_code == 400
        assert actions == []
        assert [(d.kwargs["reason"], d.kwargs["condition"]) for d in denied] == [("csrf_failed", "csrf:cross_site")]


def test_a_post_from_a_sibling_subdomain_is_refused_even_with_the_token(console_app: Any) -> None:
    client = console_app().test_client(identity=OPERATOR)
    page = client.get("/sso-console/providers").get_data(as_text=True)
    token = csrf_token_in(page)
    with listen_to(signals.permission_denied) as denied:
        resp = client.post("/sso-console/providers", data={"csrf_token": token},
                           headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate",
                                    "Sec-Fetch-Dest": "document", "Accept": "text/html"})
    assert resp.status_code == 400 and 'id="check-findings"' not in resp.get_data(as_text=True)
    assert [d.kwargs["reason"] for d in denied] == ["csrf_failed"]


@pytest.mark.parametrize("site", ["same-origin", "none", None])
def test_this_origin_a_typed_address_and_an_older_browser_pass(console_app: Any, site: str | None) -> None:
    client = console_app().test_client(identity=OPERATOR)
    headers = {"Accept": "text/html", **({"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate",
                                          "Sec-Fetch-Dest": "document"} if site else {})}
    resp = client.get("/sso-console/audit", headers=headers)
    assert resp.status_code == 200 and 'id="other-site"' not in resp.get_data(as_text=True)


@pytest.mark.parametrize("where", ["skill", "session"])
def test_a_console_skill_that_asks_for_a_year_old_sign_in_is_refused(op: Any, where: str) -> None:
    """Any maxAuthAge makes the gate check freshness, but a year asks for nothing within a
    session: the console skill's limit is at most an hour (MAX_CONSOLE_AUTH_AGE)."""
    cfg = oidc_config(op)
    skill = {"allowedGroups": ["sso-operators"]}
    if where == "skill":
        skill["maxAuthAge"] = 31536000
    else:
        skill["sensitive"] = True
        cfg["session"]["maxAuthAge"] = 31536000
    cfg["skills"] = {**cfg["skills"], "sso-operator": skill}
    cfg["console"] = {"enabled": True, "skill": "sso-operator"}
    with pytest.raises(ConfigError):
        require_recent_sign_in(parse_config(cfg))
