"""Apps and a runner for the ``flask ccsso`` commands, through click's CliRunner."""

from __future__ import annotations

import itertools
from typing import Any

from flask import Flask

from flask_ccsso import CCSSO
from flask_ccsso.cli import cli
from flask_ccsso.stores import MemoryStore
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.oidc import SKILLS

_n = itertools.count()
LONG_KEY = "k" * 48


def make(tmp_path: Any, ccsso: dict[str, Any], **config: Any) -> Flask:
    app = Flask(f"check_app_{next(_n)}", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY=LONG_KEY, CCSSO=ccsso)
    app.config.update(config)
    CCSSO(app, store=MemoryStore())
    return app


def oidc(op: Any, *, secure: bool = True, **over: Any) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
            "redirectUri": "https://portal.example.com/sso/op/callback"}
    prov.update(over)
    return {"auth": {"providers": {"op": prov}}, "skills": SKILLS, "session": {"cookieSecure": secure}}


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(cli, list(args))
