"""`flask run` (and Flask's other commands) on an app with a config mistake: the message alone, no traceback.

Real ``flask`` subprocesses, an app module and an app factory, with and
without ``--debug`` (the reloader's parent loads the app first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFIG = '{"auth": {"providers": {"okta": {"provider": "okta", "issuer": "https://x.okta.com", "clientID": "x"}}}}'

APPS = {
    "module": f'''
        from flask import Flask
        from flask_ccsso import CCSSO
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "k"
        app.config["CCSSO"] = {CONFIG}
        CCSSO(app)
    ''',
    "factory": f'''
        from flask import Flask
        from flask_ccsso import CCSSO
        sso = CCSSO()
        def create_app():
            app = Flask(__name__)
            app.config["SECRET_KEY"] = "k"
            app.config["CCSSO"] = {CONFIG}
            sso.init_app(app)
            return app
    ''',
}


def flask(tmp_path: Path, shape: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "badapp.py").write_text(textwrap.dedent(APPS[shape]))
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.getcwd())
    env.pop("FLASK_APP", None)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "badapp", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("shape", sorted(APPS))
@pytest.mark.parametrize("args", [("run", "--port", "0"), ("--debug", "run", "--port", "0"), ("routes",)],
                         ids=["run", "debug-run", "routes"])
def test_config_mistake_is_one_message(tmp_path: Path, shape: str, args: tuple[str, ...]) -> None:
    proc = flask(tmp_path, shape, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    want = "Error: flask-ccsso configuration: auth.providers.okta.clientID: unknown key. Fix: did you mean 'clientId'?"
    assert lines == [want], proc.stderr
