"""CLI answers a newcomer can act on (issue #14, item 13): ``explain`` suggests
the closest skill name for a typo; ``sessions revoke`` that matches nobody
says so and exits non-zero (an off-boarding script must not read it as done).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_ccsso.cli import cli
from tests.support.skills import sign_in


def _run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(cli, list(args))


def test_explain_suggests_the_closest_skill_for_a_typo(app: Flask) -> None:
    res = _run(app, "explain", "--skill", "database-migraton", "--claims", "{}")
    assert res.exit_code == 2
    assert "skill 'database-migraton' is not configured. Did you mean 'database-migration'?" in res.output
    assert "Configured: anyone, approver," in res.output  # every name still listed, sorted


def test_explain_without_a_close_name_lists_them_only(app: Flask) -> None:
    res = _run(app, "explain", "--skill", "zzzz", "--claims", "{}")
    assert res.exit_code == 2
    assert "Did you mean" not in res.output and "Configured: anyone" in res.output


def test_revoke_for_nobody_signed_in_exits_1_with_a_message(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    sign_in(client, op, clock)  # alice@example.com
    res = _run(app, "sessions", "revoke", "--user", "alcie@example.com")
    assert res.exit_code == 1, res.output
    assert "[ERROR] sessions revoke: no live session of alcie@example.com; nothing was revoked." in res.output
    assert "flask ccsso sessions list" in res.output
    assert client.get("/me").status_code == 200  # nobody else was touched
    res = _run(app, "sessions", "revoke", "--user", "alice@example.com")
    assert res.exit_code == 0 and "Revoked 1 session of alice@example.com." in res.output
    assert client.get("/me").status_code == 302
    assert _run(app, "sessions", "revoke", "--user", "alice@example.com").exit_code == 1  # already gone
