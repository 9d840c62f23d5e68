"""The apps the request-path benchmarks time: the baselines and flask-ccsso apps signed in for real.

``bench_request.py`` and ``bench_session.py`` (and ``bench_audit.py``, through
``bench_request``) build their contenders here, so a baseline is the same app in every
table that names it. Each builder returns ``(app, environ)``: the app and the prebuilt
environ of the request to time (``_harness.caller(app, environ)`` checks it once and
returns the callable to time).

* :func:`bare_app`: Flask's own dispatch of a view returning a string -- the floor;
* :func:`flask_login_app`: ``@login_required``, the user loaded from Flask's signed
  cookie session by a trivial ``user_loader``;
* :func:`flask_session_app`: Flask-Session on Redis, with or without its refresh write;
* :class:`Portals`: flask-ccsso apps, identity from a real OIDC sign-in against the
  in-process test provider (``tests/support/local_op.py``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import _harness as h

SKILL = "database-migration"
USER = "alice@example.com"

#: the baselines every protected-request row is compared with (its ``ratios``)
BASELINES = ("bare_flask", "flask_login", "flask_session_redis")


def ratios_of(stats: h.Stats | None, base: dict[str, h.Stats | None]) -> dict[str, float | None]:
    """``stats`` over each baseline in :data:`BASELINES` (None where one did not run)."""
    return {k: h.ratio(stats, base.get(k)) for k in BASELINES}


# --------------------------------------------------------------------------- baselines

def bare_app() -> tuple[Any, dict[str, Any]]:
    from flask import Flask

    app = Flask("bare")

    @app.get("/migrations")
    def migrations() -> str:
        return "migrations ok"

    return app, h.environ("/migrations")


def _session_cookie(app: Any) -> str:
    """Sign in (``GET /login``) with the environ the timed requests use; the ``session=`` cookie."""
    resp = h.wsgi_response(app, h.environ("/login"))
    return next(v.split(";", 1)[0] for k, v in resp.headers if k == "Set-Cookie" and v.startswith("session="))


def flask_login_app() -> tuple[Any, dict[str, Any]]:
    from flask import Flask
    from flask_login import LoginManager, UserMixin, current_user, login_required, login_user

    class User(UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    app = Flask("flask_login")
    app.config.update(SECRET_KEY="x" * 32)
    lm = LoginManager(app)
    lm.user_loader(User)

    @app.get("/login")
    def login() -> str:
        login_user(User(USER))
        return "ok"

    @app.get("/migrations")
    @login_required
    def migrations() -> str:
        return f"migrations ok {current_user.id}"

    # Signed in with the environ the timed requests use: Flask-Login's session protection
    # compares the address / User-Agent hash, and a mismatch would rewrite the cookie each time.
    env = h.environ("/migrations", {"Cookie": _session_cookie(app)})
    again = h.wsgi_response(app, env)
    assert again.code == 200 and again.header("Set-Cookie") is None, "Flask-Login rewrote its cookie"
    return app, env


def flask_session_app(prefix: str, *, refresh: bool = False) -> tuple[Any, dict[str, Any]]:
    """Flask-Session on Redis; the view answers 401 without ``session["user"]``.

    ``refresh=False``: ``SESSION_REFRESH_EACH_REQUEST=False``, one GET per request and nothing
    else (checked: a second request sets no cookie). ``refresh=True``: Flask-Session's default,
    the session saved (a SET) on every request.
    """
    import redis
    from flask import Flask, abort, session
    from flask_session import Session

    app = Flask("flask_session_refresh" if refresh else "flask_session")
    app.config.update(SECRET_KEY="x" * 32, SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(h.REDIS_URL),
                      SESSION_KEY_PREFIX=prefix + ("fsr:" if refresh else "fs:"),
                      SESSION_REFRESH_EACH_REQUEST=refresh)
    Session(app)

    @app.get("/login")
    def login() -> str:
        session["user"] = USER
        return "ok"

    @app.get("/migrations")
    def migrations() -> str:
        user = session.get("user")
        if user is None:
            abort(401)
        return f"migrations ok {user}"

    env = h.environ("/migrations", {"Cookie": _session_cookie(app)})
    if not refresh:
        again = h.wsgi_response(app, env)
        assert again.code == 200 and again.header("Set-Cookie") is None, "Flask-Session wrote on a read"
    return app, env


# --------------------------------------------------------------------------- flask-ccsso

def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def audit_block(kind: str, tmp: str) -> dict[str, Any]:
    """The ``logging`` block of ``kind``: ``"off"``; ``"on"`` (``_harness.AUDIT_LOGGING``, its own
    spool folder); ``"dead"`` (that block with one HTTP sink on a closed loopback port instead)."""
    if kind == "off":
        return {"level": "off"}
    block = dict(h.AUDIT_LOGGING, spoolDir=os.path.join(tmp, "spool-" + uuid.uuid4().hex[:6]))
    if kind == "dead":
        block.pop("destination")
        block["destinations"] = [{"type": "http", "name": "dead", "url": f"http://127.0.0.1:{dead_port()}/events",
                                  "connectTimeout": 0.5, "readTimeout": 0.5}]
    return block


@dataclass
class Portals:
    """flask-ccsso apps signed in through one in-process OpenID Provider."""

    tmp: str
    prefix: str
    op: Any = None
    apps: list[Any] = field(default_factory=list)

    def start(self) -> None:
        from tests.support.local_op import LocalOP

        self.op = LocalOP()

    def logging_block(self, audit: str) -> dict[str, Any]:
        """The ``logging`` block of an app built with ``audit`` (:func:`audit_block`)."""
        return audit_block(audit, self.tmp)

    def app(self, label: str, store: dict[str, Any] | None, audit: str, *,
            session: dict[str, Any] | None = None) -> Any:
        """An app with ``GET /migrations`` (``@requires_skill``) and ``GET /me`` (``@login_required``);
        ``store`` None is the embedded store; ``session`` overrides keys of the ``session`` block."""
        from flask import Flask

        from flask_ccsso import CCSSO, current_identity, login_required, requires_skill
        from tests.support.oidc import oidc_config

        cfg = oidc_config(self.op)
        if store is not None:
            cfg["session"]["store"] = store
        cfg["session"].update(session or {})
        cfg["logging"] = self.logging_block(audit)
        app = Flask(f"ccsso_{label}", instance_path=os.path.join(self.tmp, label))
        app.config.update(SECRET_KEY="s" * 32, CCSSO=cfg)
        CCSSO(app)

        @app.get("/migrations")
        @requires_skill(SKILL)
        def migrations() -> str:
            return f"migrations ok {current_identity.email}"

        @app.get("/me")
        @login_required
        def me() -> str:
            return str(current_identity.email)

        state = app.extensions["ccsso"]
        for st in (state.store, app.session_interface.store):
            h.COUNTER.watch_engine(getattr(st, "engine", None))
        self.apps.append(app)
        return app

    def sign_in(self, app: Any, path: str = "/migrations") -> dict[str, Any]:
        """A real OIDC sign-in (code + PKCE + RS256 ID token); the environ of a signed-in GET ``path``."""
        from tests.support.oidc import callback, start_login

        c = app.test_client()
        url = start_login(c, next_url=path)
        resp = callback(c, self.op.issue_code(url, scope="openid profile email migration:write"))
        assert resp.status_code == 302, (resp.status_code, resp.data[:300])
        name = app.session_interface.get_cookie_name(app)
        cookie = c.get_cookie(name)
        assert cookie is not None, "no session cookie after the callback"
        return h.environ(path, {"Cookie": f"{name}={cookie.value}"})

    def stop_provider(self) -> None:
        """Shut the OpenID Provider down: nothing timed afterwards may reach it."""
        self.op.close()
        self.op.server.server_close()

    def close(self) -> None:
        for app in self.apps:
            state = app.extensions["ccsso"]
            if state.audit is not None:
                with contextlib.suppress(Exception):
                    state.audit.close(timeout=2)
            with contextlib.suppress(Exception):
                app.session_interface.close()
            with contextlib.suppress(Exception):
                state.store.close()
        if self.op is not None:
            with contextlib.suppress(Exception):
                self.op.close()
                self.op.server.server_close()
