"""The console's skills section: the configured skills, and explain from the gate's own evaluator."""

from __future__ import annotations

import re
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.console import CONSOLE, OPERATOR, OPERATOR_SKILL


def _explain(operator: Any, user: str, skill: str | None = None) -> str:
    resp = operator.get(f"{CONSOLE}/skills", query_string={"user": user, "skill": skill or ""})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def _decision(page: str, skill: str) -> tuple[str, str | None]:
    m = re.search(rf'<tr data-skill="{re.escape(skill)}" data-outcome="(\w+)">(.*?)</tr>', page, re.DOTALL)
    assert m, page
    reason = re.search(r'data-reason="(\w+)"', m.group(2))
    return m.group(1), reason.group(1) if reason else None


def test_the_table_lists_the_configured_skills(console_app: Any) -> None:
    page = console_app().test_client(identity=OPERATOR).get(f"{CONSOLE}/skills").get_data(as_text=True)
    row = re.search(r'<tr data-skill="database-migration">(.*?)</tr>', page, re.DOTALL).group(1)
    assert "database-admins, senior-developers" in row and "migration:write" in row
    operator_row = re.search(rf'<tr data-skill="{OPERATOR_SKILL}">(.*?)</tr>', page, re.DOTALL).group(1)
    assert "sensitive" in operator_row and "600 s" in operator_row and "Operate single sign-on" in operator_row
    assert '<tr data-group="database-admins">' in page and '<tr data-scope="migration:write">' in page
    assert page.count("<caption>") >= 2


@pytest.mark.parametrize(("person", "outcome", "reason"), [
    ({"groups": ["database-admins"], "scopes": ["migration:write"]}, "allowed", None),
    ({"groups": ["developers"], "scopes": ["migration:write"]}, "denied", "missing_group"),
    ({"groups": ["senior-developers"], "scopes": []}, "denied", "missing_scope"),
])
def test_explain_matches_what_the_gate_decides(console_app: Any, person: dict[str, Any], outcome: str,
                                               reason: str | None) -> None:
    app = console_app()
    who = app.test_client(identity={"subject": "carol", "email": "carol@example.com", **person})
    with listen_to(signals.permission_denied) as denied:
        status = who.get("/migrations", headers={"Accept": "application/json"}).status_code
    assert status == (200 if outcome == "allowed" else 403)
    assert [d.kwargs["reason"] for d in denied] == ([reason] if reason else [])
    operator = app.test_client(identity=OPERATOR)
    for asked in ("database-migration", None):  # one skill, or every skill
        page = _explain(operator, "carol@example.com", asked)
        assert _decision(page, "database-migration") == (outcome, reason)
    assert _decision(page, OPERATOR_SKILL) == ("denied", "missing_group")
    assert 'data-condition="allowedGroups" data-passed="' + ("no" if reason == "missing_group" else "yes") in page


def test_explain_by_provider_subject_and_for_the_operator(console_app: Any) -> None:
    app = console_app()
    operator = app.test_client(identity=OPERATOR)
    page = _explain(operator, "op:olivia", OPERATOR_SKILL)
    assert _decision(page, OPERATOR_SKILL) == ("allowed", None)
    assert 'data-condition="maxAuthAge" data-passed="yes"' in page


def test_explain_for_a_stale_sign_in_is_a_step_up(console_app: Any, clock: Any) -> None:
    app = console_app()
    app.test_client(identity={"subject": "dan", "email": "dan@example.com", "groups": ["sso-operators"],
                              "auth_time": clock() - 3600})
    page = _explain(app.test_client(identity=OPERATOR), "dan@example.com", OPERATOR_SKILL)
    assert _decision(page, OPERATOR_SKILL)[0] == "step_up"


def test_an_unknown_person_or_skill_gets_a_clear_message(console_app: Any) -> None:
    operator = console_app().test_client(identity=OPERATOR)
    page = _explain(operator, "nobody@example.com")
    assert 'id="explain-problem"' in page and "No live session of nobody@example.com" in page
    assert 'id="explain-table"' not in page
    page = _explain(operator, "op:olivia", "no-such-skill")
    assert "That skill is not configured." in page
    page = _explain(operator, "<script>x</script>@example.com")
    assert "<script>x" not in page and "&lt;script&gt;" in page
