"""``flask ccsso explain``: the decision and why, with exit codes 0 / 1 / 2."""

from __future__ import annotations

import json

import pytest

from flask_ccsso.cli.skills import explain
from tests.support.skills import sign_in


def run(app, *args):
    return app.test_cli_runner().invoke(explain, list(args))


def test_explain_stored_session_allowed(app, op, clock):
    sign_in(app.test_client(), op, clock, groups=["senior-developers", "hidden-group"],
            scope="openid migration:write")
    res = run(app, "--user", "Alice@Example.com", "--skill", "database-migration")
    assert res.exit_code == 0, res.output
    assert "✓ allowedGroups: member of senior-developers" in res.output
    assert "✓ requiredScopes" in res.output and "ALLOWED" in res.output
    assert "hidden-group" not in res.output


def test_explain_stored_session_denied(app, op, clock):
    sign_in(app.test_client(), op, clock, groups=["staff"], scope="openid")
    res = run(app, "--user", "alice@example.com", "--skill", "database-migration")
    assert res.exit_code == 1
    assert "✗ allowedGroups" in res.output and "✗ requiredScopes: missing migration:write" in res.output
    assert "DENIED (missing_group, condition allowedGroups)" in res.output


def test_explain_uses_the_most_recent_session(app, op, clock):
    sign_in(app.test_client(), op, clock, groups=["staff"], scope="openid")
    clock.advance(120)
    sign_in(app.test_client(), op, clock, groups=["security-team"], scope="openid security:read")
    assert run(app, "--user", "alice@example.com", "--skill", "security-audit").exit_code == 0


def test_explain_claims(app):
    claims = {"sub": "x", "groups": ["security-team"], "scp": "security:read"}
    res = run(app, "--claims", json.dumps(claims), "--skill", "security-audit")
    assert res.exit_code == 0 and "ALLOWED" in res.output
    res = run(app, "--claims", json.dumps({"groups": ["staff"]}), "--skill", "mfa-needed")
    assert res.exit_code == 1 and "✗ requireMfa" in res.output


def test_explain_networks_and_step_up(app, clock):
    claims = json.dumps({"groups": ["devops-engineers"], "auth_time": clock.now - 5000})
    res = run(app, "--claims", claims, "--skill", "prod-deploy")
    assert res.exit_code == 1 and "✗ maxAuthAge" in res.output and "STEP-UP" in res.output
    res = run(app, "--claims", "{}", "--skill", "office-only", "--ip", "10.2.3.4")
    assert res.exit_code == 0 and "✓ allowedNetworks" in res.output
    res = run(app, "--claims", "{}", "--skill", "office-only")
    assert res.exit_code == 1 and "no --ip given" in res.output


@pytest.mark.parametrize("args", [
    ("--user", "nobody@example.com", "--skill", "security-audit"),
    ("--claims", "{not json", "--skill", "security-audit"),
    ("--claims", "[]", "--skill", "security-audit"),
    ("--claims", "{}", "--skill", "no-such-skill"),
    ("--claims", "{}", "--user", "a@b.c", "--skill", "security-audit"),
    ("--skill", "security-audit"),
    ("--claims", "{}", "--skill", "security-audit", "--provider", "nope"),
])
def test_explain_errors_exit_2(app, args):
    res = run(app, *args)
    assert res.exit_code == 2, res.output


def test_explain_is_registered_under_flask_ccsso():
    from flask_ccsso.cli import cli

    assert cli.get_command(None, "explain") is explain  # type: ignore[arg-type]
