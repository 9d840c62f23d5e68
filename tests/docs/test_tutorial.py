"""docs/tutorial.md runs as written (issue #14 item 1).

Its files are copied byte for byte into an empty folder, the app is started
with the tutorial's own ``flask --app app run --debug`` command (in its own
process, on a free loopback port), and a real HTTP client follows the
page: sign-in at the development IdP, the skill-protected route (alice yes,
dave no), the sensitive route and its step-up, sign-out, and the audit rows
in SQLite. The only help the test gives the app is a movable clock
(tests/support/shifted_clock.py), so "older than five minutes" needs no
five-minute wait.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from flask_ccsso.config import load_file, parse_config
from tests.support import tutorial
from tests.support.tutorial import ROOT, RunningApp, idp_sign_in, open_signed_in, wait_for

SECRET = "tutorial-test-" + "k" * 40


def test_the_tutorial_marks_its_files_and_commands() -> None:
    assert sorted(tutorial.files()) == ["app.py", "ccsso.json"]
    assert tutorial.run_command()[:4] == ["flask", "--app", "app", "run"]
    assert sorted(tutorial.variants()) == ["Entra ID", "Google Workspace", "Okta"]
    # the config file is JSON as written, with the four blocks a reader already has
    assert sorted(json.loads(tutorial.files()["ccsso.json"])) == ["auth", "logging", "session", "skills"]


def test_the_title_attribute_is_rendered_by_mkdocs() -> None:
    """The marks the test reads are also what the reader sees: mkdocs shows them as the file's name."""
    pytest.importorskip("mkdocs")
    import markdown

    with open(ROOT / "mkdocs.yml", encoding="utf-8") as f:
        assert re.search(r"^\s*- pymdownx\.superfences\s*$", f.read(), re.MULTILINE)
    out = markdown.markdown('```python title="app.py"\nx = 1\n```\n',
                            extensions=["pymdownx.highlight", "pymdownx.superfences"])
    assert re.search(r'<span class="filename">app\.py</span>', out), out


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RunningApp, Path]]:
    tutorial.write_files(tmp_path)
    clock_file = tmp_path / "clock-shift"
    clock_file.write_text("0")
    app = RunningApp(
        tmp_path,
        env={"SECRET_KEY": SECRET, "CCSSO_DEVIDP_ENABLED": "1", "CCSSO_TEST_CLOCK_FILE": str(clock_file),
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        launcher=("-m", "tests.support.shifted_clock"),
        extra_args=("--no-reload",),  # one process: the reloader's file polling only costs CPU here
    )
    app.start()
    try:
        yield app, clock_file
    finally:
        app.stop()


def _audit_tail(folder: Path) -> list[dict[str, Any]]:
    """``flask --app app ccsso audit tail`` in a second terminal, as step 7 says (no development IdP there)."""
    env = {k: v for k, v in os.environ.items() if k != "CCSSO_DEVIDP_ENABLED"}
    env["SECRET_KEY"] = SECRET
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "ccsso", "audit", "tail", "-n", "200"],
                          check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _audit_files(folder: Path) -> list[Path]:
    """Where ``sqlite:///audit.sqlite`` lands: next to app.py, or in the instance folder."""
    return [p for p in (folder / "audit.sqlite", folder / "instance" / "audit.sqlite") if p.exists()]


def test_the_tutorial_app_signs_in_protects_steps_up_and_audits(running: tuple[RunningApp, Path]) -> None:
    app, clock_file = running
    base = app.base

    # step 5: alice is sent to the IdP, signs in and lands on the protected page
    alice, landed = open_signed_in(base, "/migrations", "alice")
    assert landed.status_code == 200, landed.text
    assert urlsplit(landed.url).path == "/migrations"
    assert landed.json()["caller"] == "alice@example.com"
    assert alice.get(base + "/", timeout=30).text.startswith("Hello Alice")

    # ... dave is refused, and the page names the skill
    _, refused = open_signed_in(base, "/migrations", "dave")
    assert refused.status_code == 403
    assert "database-migration" in refused.text

    # step 6: the sensitive route runs on a fresh sign-in ...
    fresh = alice.get(base + "/migrations/run", timeout=30)
    assert fresh.status_code == 200 and fresh.json()["ran"], fresh.text

    # ... and asks again once the sign-in is older than maxAuthAge (300 s)
    clock_file.write_text("301")
    again = alice.get(base + "/migrations/run", timeout=30)
    assert "/devidp/authorize" in again.url and "prompt=login" in again.url, again.url
    assert any("stepup=migration-run" in (r.headers.get("Location") or "") for r in again.history)
    stepped = idp_sign_in(alice, again, "alice")
    assert stepped.status_code == 200 and urlsplit(stepped.url).path == "/migrations/run", stepped.text
    assert alice.get(base + "/migrations/run", timeout=30).status_code == 200

    # sign out (the link of the home page): confirm, then the IdP ends its session and comes back
    confirm = alice.get(base + "/sso/logout", timeout=30)
    field, token = re.search(r'<input type="hidden" name="([^"]+)" value="([^"]+)"', confirm.text).groups()  # type: ignore[union-attr]
    out = alice.post(base + "/sso/logout", data={field: token}, headers={"Origin": base}, timeout=30)
    assert out.status_code == 200 and urlsplit(out.url).path == "/sso/logged-out", (out.url, out.text[:300])
    assert alice.get(base + "/migrations", timeout=30).url.startswith(base + "/devidp/authorize")

    # step 7: the audit trail, through the CLI the tutorial shows, and as rows in the SQLite file
    wanted = {("auth.login", "alice@example.com"), ("auth.login", "dave@example.com"),
              ("permission.denied", "dave@example.com"), ("stepup.required", "alice@example.com"),
              ("stepup.satisfied", "alice@example.com"), ("skill.invoked", "alice@example.com"),
              ("auth.logout", "alice@example.com")}

    def seen() -> bool:
        events = _audit_tail(app.folder)
        got = {(e.get("type"), (e.get("actor") or {}).get("email")) for e in events}
        return wanted <= got

    wait_for(seen, timeout=60, what="the tutorial's audit events")
    [db] = _audit_files(app.folder)
    with closing(sqlite3.connect(db)) as conn:  # sqlite3's own "with" commits but does not close
        (count,) = conn.execute("SELECT count(*) FROM ccsso_audit_events").fetchone()
    assert count >= len(wanted)


@pytest.mark.parametrize("idp", ["Okta", "Entra ID", "Google Workspace"])
def test_the_switch_to_a_real_idp_is_a_config_change(idp: str, tmp_path: Path) -> None:
    """Step 8: the tutorial's config with the IdP's ``auth`` block and without ``cookieSecure`` is valid."""
    config = json.loads(tutorial.files()["ccsso.json"])
    config["auth"] = json.loads(tutorial.variants()[idp])["auth"]
    del config["session"]["cookieSecure"]
    path = tmp_path / "ccsso.json"
    path.write_text(json.dumps(config))
    environ = {"OKTA_CLIENT_ID": "0oa1", "OKTA_CLIENT_SECRET": "s" * 40, "OKTA_ISSUER": "https://org.okta.com/oauth2/default",
               "AZURE_TENANT_ID": "8eaef023-2b34-4da1-9baa-8bc8c9d6a490", "AZURE_CLIENT_ID": "c1",
               "AZURE_CLIENT_SECRET": "s" * 40, "PORTAL_URL": "https://portal.example.com"}
    parsed = parse_config(load_file(str(path)), environ=environ)
    [name] = parsed.providers
    assert name == config["auth"]["provider"]
    assert parsed.session.cookie_secure is True
    assert sorted(parsed.skills) == ["database-migration", "migration-run"]
    # the app itself does not change: it mounts the development IdP only when asked
    assert "CCSSO_DEVIDP_ENABLED" in tutorial.files()["app.py"]

