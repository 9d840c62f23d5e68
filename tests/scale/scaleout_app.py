"""A small portal and a stand-alone dev IdP for ``tests/scale/test_scaleout.py``.

Both are app factories that read everything from the environment, so the
same module runs under gunicorn (``scaleout_app:create_app()``, with tests/scale on the path), in
``flask --app scaleout_app:create_app ccsso ...`` and in the IdP
process (``scaleout_app:create_idp_app()``).

Portal variables:

``SCALEOUT_PUBLIC_URL``   the portal's public base URL (its ``redirectUri``)
``SCALEOUT_IDP_ISSUER``   the dev IdP's issuer
``SCALEOUT_REDIS_URL``    the session store; ``SCALEOUT_KEY_PREFIX`` its key prefix
``SCALEOUT_AUDIT_URL``    optional: an SQLAlchemy URL for the audit trail, table ``SCALEOUT_AUDIT_TABLE``
``SCALEOUT_INSTANCE``     the instance folder (audit spool)
``SCALEOUT_CLIENT_SECRET`` and ``SECRET_KEY``

Each response names the worker that served it (``X-Worker-Pid``), and a
``?hold=<seconds>`` query keeps the worker busy for that long *before* the app
sees the request (so the session store is not touched while it waits): a test
sends a few of those at once to make every worker take one.

IdP variables: ``SCALEOUT_IDP_ISSUER``, ``SCALEOUT_IDP_REDIRECTS`` (comma
separated redirect URIs of the ``portal`` client), ``SCALEOUT_IDP_INSTANCE``,
``SCALEOUT_CLIENT_SECRET`` and ``CCSSO_DEVIDP_ENABLED=1``.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, jsonify

from flask_ccsso import CCSSO, current_identity, login_required, requires_skill

AUDIT_EVENTS = ["auth.login", "auth.logout", "auth.login_failed", "permission.denied", "skill.invoked",
                "session.expired", "session.revoked"]


class _WorkerTag:
    """WSGI middleware: ``X-Worker-Pid`` on every answer; ``?hold=`` waits first."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        hold = parse_qs(environ.get("QUERY_STRING", "")).get("hold")
        if hold:
            time.sleep(min(float(hold[0]), 5.0))
        pid = str(os.getpid())

        def tagged(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("X-Worker-Pid", pid)], exc_info)

        return self.app(environ, tagged)


def portal_config() -> dict[str, Any]:
    public = os.environ["SCALEOUT_PUBLIC_URL"].rstrip("/")
    cfg: dict[str, Any] = {
        "auth": {"providers": {"dev": {
            "provider": "oidc",
            "clientId": "portal",
            "clientSecret": "${SCALEOUT_CLIENT_SECRET}",
            "issuer": "${SCALEOUT_IDP_ISSUER}",
            "redirectUri": f"{public}/sso/dev/callback",
            "audience": "api://ccsso-dev",
            "scopes": ["openid", "profile", "email", "migration:write", "security:read"],
        }}},
        "skills": {
            "database-migration": {"allowedGroups": ["database-admins", "senior-developers"],
                                   "requiredScopes": ["migration:write"]},
            "security-audit": {"allowedGroups": ["security-team"], "requiredScopes": ["security:read"]},
        },
        "session": {
            "absoluteTimeout": 28800, "idleTimeout": 3600, "enableSlidingExpiration": True,
            "cookieSecure": False,
            "store": {"type": "redis", "url": "${SCALEOUT_REDIS_URL}", "keyPrefix": "${SCALEOUT_KEY_PREFIX}"},
        },
        "logging": {"level": "off"},
    }
    if os.environ.get("SCALEOUT_AUDIT_URL"):
        cfg["logging"] = {
            "level": "audit",
            "events": AUDIT_EVENTS,
            "failureThreshold": False,
            "flushInterval": 0.2,
            "spoolDir": os.path.join(os.environ["SCALEOUT_INSTANCE"], "audit-spool"),
            "destinations": [{"type": "sqlalchemy", "name": "pg", "url": "${SCALEOUT_AUDIT_URL}",
                              "table": os.environ["SCALEOUT_AUDIT_TABLE"]}],
        }
    return cfg


def create_app() -> Flask:
    """The portal: the same code and config on every worker and host."""
    app = Flask(__name__, instance_path=os.environ["SCALEOUT_INSTANCE"])
    app.config.update(SECRET_KEY=os.environ["SECRET_KEY"], CCSSO=portal_config())
    CCSSO(app)

    @app.get("/health")
    def health() -> Any:  # touches no session
        return {"pid": os.getpid()}

    @app.get("/whoami")
    @login_required
    def whoami() -> Any:
        return jsonify(email=current_identity.email, subject=current_identity.subject, pid=os.getpid())

    @app.get("/migrations")
    @requires_skill("database-migration")
    def migrations() -> Any:
        return jsonify(ok=True, email=current_identity.email, pid=os.getpid())

    @app.get("/security")
    @requires_skill("security-audit")
    def security() -> Any:
        return jsonify(ok=True, email=current_identity.email, pid=os.getpid())

    app.wsgi_app = _WorkerTag(app.wsgi_app)  # type: ignore[method-assign]
    return app


def create_idp_app() -> Flask:
    """The development IdP on its own (another process, another port)."""
    from flask_ccsso.devidp import DevClient, DevIdP

    app = Flask(__name__, instance_path=os.environ["SCALEOUT_IDP_INSTANCE"])
    app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
    redirects = [u for u in os.environ["SCALEOUT_IDP_REDIRECTS"].split(",") if u]
    DevIdP(app, issuer=os.environ["SCALEOUT_IDP_ISSUER"], enabled=True,
           clients=[DevClient("portal", os.environ["SCALEOUT_CLIENT_SECRET"], redirects)])
    app.wsgi_app = _WorkerTag(app.wsgi_app)  # type: ignore[method-assign]
    return app
