"""The extension object: ``CCSSO(app=None)`` + ``init_app``.

``init_app`` builds the app's :class:`~flask_ccsso.state.CCSSOState` (the
composition root) explicitly, collaborator by collaborator, and keeps it in
``app.extensions["ccsso"]``. The extension object keeps no app, so one
``CCSSO()`` can serve several apps with different configs in one process;
after ``init_app`` it is a handle on the current app's state (``sso.state``,
``sso.providers``, ``sso.revoke_user(...)``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import click
import requests
from flask import Flask, g, has_app_context
from flask.cli import ScriptInfo
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from ._context import unproxied
from ._validate import setting_int
from .audit_glue import audit_settings, start_audit
from .config import CCSSOConfig, load_file, parse_config
from .exceptions import CCSSOError, ConfigError
from .gate.bearer import DeprovisionedCheck, make_bearer_authenticator
from .gate.current import identity_required
from .gate.decorators import check_skill_names, has_skill
from .gate.policy import SkillPolicy
from .gate.refresh import refresh_if_needed
from .gate.session import SessionGate
from .gate.stepup import stepup_notice
from .providers import provider_class
from .providers.base import Provider
from .responses import handle_error, library_security_headers, page_settings, store_unavailable_into
from .sessions.index import SessionIndex
from .sessions.interface import add_vary, cookie_settings, first_header, make_session_interface
from .state import EXTENSION_KEY, CCSSOState, get_state
from .stores import SharedStore, open_store
from .views import bp, register_callback_aliases

log = logging.getLogger("flask_ccsso")


def _load_raw(app: Flask) -> Mapping[str, Any]:
    raw = app.config.get("CCSSO")
    files = app.config.get("CCSSO_CONFIG_FILE")
    if raw is not None and files:
        raise ConfigError("CCSSO_CONFIG_FILE", "both CCSSO and CCSSO_CONFIG_FILE are set.", "use one of them.")
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise ConfigError("CCSSO", "must be a dict.", "set app.config['CCSSO'] = {'auth': {...}, ...}.")
        return raw
    if not files:
        raise ConfigError("CCSSO", "no configuration found.",
                          "set app.config['CCSSO_CONFIG_FILE'] to your JSON file, or app.config['CCSSO'] to a dict.")
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    merged: dict[str, Any] = {}
    for f in files:
        path = os.path.join(app.root_path, f) if not os.path.isabs(f) else str(f)
        for block, value in load_file(path).items():
            if block in merged:
                raise ConfigError(block, f"is defined in more than one config file ({f}).", "keep each block in one file.")
            merged[block] = value
    return merged


def _make_store(app: Flask, cfg: CCSSOConfig, clock: Callable[[], float]) -> SharedStore:
    """``session.store``, its SQLite paths resolved against the instance folder (:func:`open_store`)."""
    return open_store(cfg.session.store, app.instance_path, clock=clock)


class CCSSO:
    """Enterprise single sign-on for a Flask app.

    After :meth:`init_app` the object is a handle on an app's state: the
    current app's, or -- outside an app context -- the one app it was
    initialised on (:attr:`state`, :attr:`providers`, :attr:`sessions`,
    :meth:`revoke_user`).

    :param app: the app, or ``None`` to call :meth:`init_app` later.
    :param clock: a ``() -> float`` epoch-seconds clock (tests move time with it).
    :param store: a :class:`~flask_ccsso.stores.SharedStore` to use instead of
        the one ``session.store`` describes (tests).
    :param http: a ``requests.Session`` for talking to IdPs (proxies, CA bundles).
    """

    def __init__(self, app: Flask | None = None, *, clock: Callable[[], float] | None = None,
                 store: SharedStore | None = None, http: requests.Session | None = None) -> None:
        self._clock = clock
        self._store = store
        self._http = http
        #: the apps initialised with this object (weakly: it keeps no app alive)
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    # -- the handle ------------------------------------------------------------------
    def get_state(self, app: Flask | None = None) -> CCSSOState:
        """The state of ``app``; default: the current app, else the one app
        this object was initialised on.

        :raises RuntimeError: no app is current and there is not exactly one."""
        if app is None and not has_app_context():
            apps = list(self._apps)
            if len(apps) != 1:
                raise RuntimeError("no app is current and this CCSSO object serves "
                                   f"{len(apps) or 'no'} apps: pass the app, or use an app context.")
            app = apps[0]
        return get_state(app)

    @property
    def state(self) -> CCSSOState:
        """:meth:`get_state` for the current (or only) app."""
        return self.get_state()

    @property
    def providers(self) -> dict[str, Provider]:
        """The current (or only) app's providers, by configured name."""
        return self.get_state().providers

    @property
    def sessions(self) -> SessionIndex:
        """The current (or only) app's session index (live sessions, revocation)."""
        return self.get_state().sessions

    def revoke_user(self, email_or_id: str, *, reason: str = "operator") -> int:
        """End every session of a person (by email, every provider; or by
        ``provider:subject``) on every worker and host. Returns how many."""
        return self.get_state().revoke_user(email_or_id, reason=reason)

    def revoke_identity(self, identity_id: str, *, reason: str = "api") -> int:
        """End every session of ``provider:subject`` on every worker and host."""
        return self.get_state().revoke_identity(identity_id, reason=reason)

    # -- start-up ----------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Validate the configuration and build the app's state (start-up
        errors are :class:`~flask_ccsso.exceptions.ConfigError`; while the
        ``flask`` command loads the app, one it prints as a single line)."""
        try:
            self._init_app(app)
        except ConfigError as exc:
            shown = _for_flask_command(exc)
            if shown is None:
                raise
            raise shown from exc

    def _init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("flask-ccsso is already initialised on this app; call init_app once per app "
                               "(create one CCSSO() and call init_app in your app factory).")
        for key, default in (("CCSSO", None), ("CCSSO_CONFIG_FILE", None), ("CCSSO_URL_PREFIX", "/sso"),
                             ("CCSSO_TRUSTED_PROXIES", 0), ("CCSSO_LOGIN_VIEW", None)):
            app.config.setdefault(key, default)
        cfg = parse_config(_load_raw(app))
        if not cfg.providers:
            raise ConfigError("auth", "configures no provider.", "add a provider.")
        if cfg.console.enabled:  # the gate's freshness rule, which the config (a lower layer) cannot ask
            from .console.recent_sign_in import require_recent_sign_in
            require_recent_sign_in(cfg)
        if not app.secret_key:
            raise ConfigError("SECRET_KEY", "is not set; flask-ccsso signs values with it.",
                              "set app.config['SECRET_KEY'] from an environment variable.")
        clock = self._clock or time.time
        prefix = "/" + str(app.config["CCSSO_URL_PREFIX"]).strip("/")
        trusted = setting_int(app.config, "CCSSO_TRUSTED_PROXIES", 0, maximum=32)
        page_settings(app)  # CCSSO_APP_NAME / CCSSO_HOME_URL: refused now, not on an error page
        settings = audit_settings(cfg, app.instance_path)  # validated now, with every other block

        # cookies: only a session id travels in them
        app.config.update(cookie_settings(app, cfg.session))  # __Host- by default when Secure
        if not cfg.session.cookie_secure:
            log.warning("flask-ccsso: session.cookieSecure is false -- the session cookie will travel over plain "
                        "http. Use this only for local development.")
        store = self._store or _make_store(app, cfg, clock)
        iface = make_session_interface(app, cfg.session, clock)
        iface.unavailable_answer = store_unavailable_into  # a 503 while saving: JSON to APIs, HTML to browsers
        app.session_interface = iface
        providers = self._providers(app, cfg, store, clock)

        if trusted > 0:
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted, x_proto=trusted,  # type: ignore[method-assign]
                                    x_host=trusted, x_port=trusted, x_prefix=trusted)
        _check_route_clashes(app, providers, prefix)
        app.register_blueprint(bp, url_prefix=prefix)
        register_callback_aliases(app, providers, prefix)
        app.register_error_handler(CCSSOError, handle_error)
        app.after_request(_personal_responses_not_stored)
        app.after_request(library_security_headers)
        app.add_template_global(has_skill, "has_skill")
        app.add_template_global(stepup_notice, "ccsso_stepup_notice")
        app.jinja_env.globals.setdefault("stepup_notice", stepup_notice)
        check_skill_names(app, cfg.skills)
        app.before_request(_first_request_checks(app, cfg, providers, prefix))

        if cfg.scim.enabled:  # imported only then: scim2-models is the optional extra "scim"
            from .scim import register_scim
            register_scim(app, cfg.scim)
        if cfg.console.enabled:
            from .console import register_console
            register_console(app, cfg.console)
        deprovisioned = DeprovisionedCheck(store) if cfg.scim.enabled else None
        state = CCSSOState(
            app_name=app.name, config=cfg, providers=providers, store=store, session_interface=iface,
            sessions=SessionIndex(iface), gate=SessionGate(cfg.session, store, clock), clock=clock, url_prefix=prefix,
            bearer_authenticator=make_bearer_authenticator(app, providers, clock, cfg.skills.values(),
                                                           deprovisioned=deprovisioned),
            refresher=refresh_if_needed, policy=SkillPolicy(cfg, providers, clock), audit_settings=settings,
            audit=start_audit(app, settings, clock), deprovisioned=deprovisioned,
        )
        app.extensions[EXTENSION_KEY] = state
        self._apps.add(app)

    def _providers(self, app: Flask, cfg: CCSSOConfig, store: SharedStore,
                   clock: Callable[[], float]) -> dict[str, Provider]:
        """Built inside an app context so relative paths (SAML metadata, keys)
        resolve against the app's root_path and fail here, at start-up."""
        http = self._http or requests.Session()
        http.headers.setdefault("User-Agent", "flask-ccsso")
        with app.app_context():
            providers = {name: provider_class(ps.type)(ps, store=store, clock=clock, http=http)
                         for name, ps in cfg.providers.items()}
            for prov in providers.values():
                prov.startup()
        return providers

    def __repr__(self) -> str:  # pragma: no cover
        return "<CCSSO>"


class _FlaskCommandConfigError(ConfigError, click.ClickException):
    """A :class:`~flask_ccsso.exceptions.ConfigError` raised while the
    ``flask`` command (``flask run``, ``flask shell``, ``flask routes`` ...)
    loads the app.

    Flask lets an error from the app factory or the app module propagate out
    of ``flask run`` as a traceback that buries the one line that matters.
    click prints a :class:`click.ClickException` as ``Error: <message>`` and
    exits with its ``exit_code``, so this error is both: still a
    ``ConfigError`` to every ``except`` clause (``flask ccsso`` commands
    report it their own way), and one clean message at the terminal, exit
    code 2 (as ``flask ccsso`` commands end on a config error). Outside the ``flask`` command nothing
    changes: the plain ``ConfigError`` propagates.
    """

    exit_code = 2

    def __init__(self, error: ConfigError) -> None:
        super().__init__(error.path, error.problem, error.fix)
        self.message = f"flask-ccsso configuration: {error.path}: {error.problem}" + (
            f" Fix: {error.fix}" if error.fix else "")
        self.show_color: bool | None = None  # click decides (a terminal gets colour)

    def format_message(self) -> str:
        return self.message


def _for_flask_command(error: ConfigError) -> _FlaskCommandConfigError | None:
    """``error`` as click prints it, when the ``flask`` command is loading
    the app (a click context carrying Flask's ``ScriptInfo``); else ``None``."""
    if isinstance(error, click.ClickException):
        return None
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return None
    return _FlaskCommandConfigError(error)


def _alias_paths(providers: Mapping[str, Provider]) -> dict[str, str]:
    out = {}
    for name, prov in providers.items():
        uri = getattr(prov.settings, "redirect_uri", None) or getattr(prov.settings, "acs_url", None)
        if uri:
            out[urlsplit(uri).path or "/"] = name
    return out


def _check_route_clashes(app: Flask, providers: Mapping[str, Provider], prefix: str) -> None:
    """A redirectUri path that an app route also claims would silently swallow
    either the sign-in or the page: refuse it. Run at ``init_app`` and again
    before the first request (routes added after ``init_app``)."""
    aliases = _alias_paths(providers)
    for rule in app.url_map.iter_rules() if aliases else ():
        name = aliases.get(rule.rule)
        if name is not None and rule.endpoint != f"ccsso_callback_{name}" and not rule.endpoint.startswith("ccsso."):
            prov = providers[name]
            key = "acsUrl" if prov.protocol == "saml" else "redirectUri"
            raise ConfigError(f"{prov.settings.path}.{key}",
                              f"its path {rule.rule!r} is also the route of view {rule.endpoint!r}.",
                              f"change {key} to {prefix}/{name}/"
                              f"{'acs' if prov.protocol == 'saml' else 'callback'} (and register that at the IdP), "
                              "or move the view.")


def _first_request_checks(app: Flask, cfg: CCSSOConfig, providers: Mapping[str, Provider],
                          prefix: str) -> Callable[[], None]:
    """A ``before_request`` function: the start-up checks once more, before
    the first request, for what the app registered after ``init_app``
    (Flask accepts no new routes after that, so once is enough). A failure
    refuses every request (a 500 page, the details in the log) until fixed."""
    done = threading.Event()

    def check() -> None:
        if done.is_set():
            return
        _check_route_clashes(app, providers, prefix)
        check_skill_names(app, cfg.skills)
        done.set()

    check.__qualname__ = "ccsso_startup_checks"
    return check


def _personal_responses_not_stored(response: Response) -> Response:
    """A response made for a signed-in caller (the identity was resolved and
    is someone) is personal: ``Cache-Control: no-store`` unless the view chose
    its own caching, so neither a shared proxy nor the browser's history keeps
    it after sign-out; ``Vary: Cookie`` / ``Authorization`` for caches that
    ignore ``no-store``. Costs no store call."""
    ident = getattr(unproxied(g), "_ccsso_identity", None)
    if ident:
        headers = response.headers
        if first_header(headers, "cache-control") is None:
            headers["Cache-Control"] = "no-store"
        add_vary(response, "Authorization" if getattr(ident, "via", None) == "bearer" else "Cookie")
    return response


__all__ = ["CCSSO", "CCSSOState", "get_state", "identity_required"]
