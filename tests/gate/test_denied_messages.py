"""A 403 for missing scopes names them (issue #14, item 13).

The required scopes are the skill's configuration, not the person's data:
naming the ones the sign-in lacks tells the caller what to ask the IdP for.
The person's groups and scopes they do have are still never shown.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_ccsso import reasons
from tests.support.skills import JSON, access_token, add_skill_routes, bearer, sign_in, skills_config

#: two required scopes, so the message must name only the one that is missing
SKILLS = {"migrate": {"allowedGroups": ["database-admins"], "requiredScopes": ["migration:read", "migration:write"]}}


@pytest.fixture
def app(make_app: Any, op: Any) -> Flask:
    return add_skill_routes(make_app(skills_config(op, skills={**SKILLS, "security-audit": {},
                                                                "database-migration": {},
                                                                "infrastructure-deploy": {}})))


def _assert_names_missing_scope_only(text: str) -> None:
    assert "missing migration:write" in text, text
    assert "migration:read" not in text  # a scope the caller has is not echoed
    assert "database-admins" not in text and "secret-team" not in text  # never the groups


def test_browser_session_403_names_the_missing_scope_in_html_and_json(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    sign_in(client, op, clock, groups=["database-admins", "secret-team"], scope="openid migration:read")
    page = client.get("/s/migrate")
    assert page.status_code == 403 and page.mimetype == "text/html"
    _assert_names_missing_scope_only(page.get_data(as_text=True))
    resp = client.get("/s/migrate", headers=JSON)
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["error"] == reasons.MISSING_SCOPE and body["missing_scopes"] == ["migration:write"]
    _assert_names_missing_scope_only(body["error_description"])


def test_bearer_403_names_the_missing_scope(app: Flask, op: Any, clock: Any) -> None:
    tok = access_token(op, clock, scope="migration:read", groups=["database-admins", "secret-team"])
    resp = app.test_client().get("/s/migrate", headers=bearer(tok))
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["missing_scopes"] == ["migration:write"] and body["condition"] == "requiredScopes"
    _assert_names_missing_scope_only(body["error_description"])


def test_other_denials_name_no_scope(app: Flask, op: Any, clock: Any) -> None:
    """A denial for groups says nothing about scopes (and adds no ``missing_scopes``)."""
    tok = access_token(op, clock, scope="migration:read", groups=["secret-team"])
    body = app.test_client().get("/s/migrate", headers=bearer(tok)).get_json()
    assert body["condition"] == "allowedGroups" and "missing_scopes" not in body
    assert "missing" not in body["error_description"] and "secret-team" not in body["error_description"]
