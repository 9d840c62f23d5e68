"""`flask ccsso ...` on an app that cannot start: the message and exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_config_error_is_exit_2_without_traceback(tmp_path):
    (tmp_path / "badapp.py").write_text(textwrap.dedent('''
        from flask import Flask
        from flask_ccsso import CCSSO
        app = Flask(__name__)
        app.config["SECRET_KEY"] = "k"
        app.config["CCSSO"] = {"auth": {"provider": "okta", "clientID": "x", "issuer": "https://x.okta.com"}}
        CCSSO(app)
    '''))
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.getcwd())
    for args in (["sessions", "list"], ["explain", "--claims", "{}", "--skill", "x"], ["audit", "tail"]):
        proc = subprocess.run([sys.executable, "-m", "flask", "--app", "badapp", "ccsso", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "auth.clientID: unknown key" in proc.stderr and "did you mean 'clientId'" in proc.stderr
        assert "Traceback" not in proc.stderr
