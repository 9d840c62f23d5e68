"""The extension object: ``CCSSO(app=None)`` + ``init_app``.

Per-app state is a small dataclass in ``app.extensions["ccsso"]``; the
extension object keeps nothing app-specific, so one ``CCSSO()`` can serve
several apps with different configs in one process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app, g, redirect, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from . import reasons, signals
from ._validate import setting_int
from .config import CCSSOConfig, SkillSettings, load_file, parse_config
from .exceptions import CCSSOError, ConfigError, LoginRequired, SessionExpired, StepUpRequired
from .identity import AnonymousIdentity, Identity
from .providers import provider_class
from .providers.base import Provider
from .responses import bearer_challenge, error_response, library_security_headers, login_url_for, wants_json
from .session import SessionGate, cookie_settings, make_session_interface
from .stores import RedisStore, SharedStore, SQLStore

log = logging.getLogger("flask_ccsso")


@dataclass
class CCSSOState:
    """Everything flask-ccsso knows about one app (``app.extensions["ccsso"]``)."""

    app_name: str
    config: CCSSOConfig
    providers: dict[str, Provider]
    store: SharedStore
    gate: SessionGate
    clock: Callable[[], float]
    url_prefix: str
    session_interface: Any
    #: set by the skills module: Authorization: Bearer -> Identity
    bearer_authenticator: Callable[[CCSSOState, str], Identity] | None = None
    #: set by the refresh module: refresh tokens inside the refresh window
    refresher: Callable[[CCSSOState, Identity], Identity | AnonymousIdentity] | None = None
    backchannel_logout: Callable[..., Response] | None = None
    audit: Any = None
    audit_settings: Any = None
    policy: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    # -- identity ---------------------------------------------------------------
    def load_identity(self) -> Identity | AnonymousIdentity:
        # the WSGI environ key, as request.headers.get("Authorization") reads it
        auth = request.environ.get("HTTP_AUTHORIZATION", "")
        if auth[:7].lower() == "bearer " and self.bearer_authenticator is not None:
            return self.bearer_authenticator(self, auth[7:].strip())
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        identity = self.gate.current(app)
        if identity and self.refresher is not None:
            identity = self.refresher(self, identity)  # type: ignore[arg-type]
        return identity

    def max_auth_age(self, skill: SkillSettings) -> float:
        return skill.max_auth_age if skill.max_auth_age is not None else self.config.session.max_auth_age

    def forget_session(self, identity: Identity, sid: str) -> None:
        """Drop a session (cookie id or store handle) from the per-user
        indexes, which hold store handles (it is being ended)."""
        handle = self.session_interface.handle_of(sid)
        try:
            self.store.set_remove(f"user:{identity.id}", handle)
            if identity.session_index:
                self.store.set_remove(f"idpsid:{identity.provider}:{identity.session_index}", handle)
        except CCSSOError:
            log.warning("flask-ccsso: could not update the session index at logout")

    def revoke_sids(self, sids: set[str] | list[str]) -> int:
        """End these sessions (store handles, as the per-user index holds them,
        or cookie session ids) on every worker and host (effective on their
        next request, which is told ``revoked``). Returns how many were live."""
        return sum(1 for sid in sids if self.session_interface.end_sid(sid, reasons.REVOKED))

    def revoke_identity(self, identity_id: str, *, reason: str = "api") -> int:
        """End every session of ``provider:subject`` on every worker and host."""
        sids = self.store.set_members(f"user:{identity_id}")
        count = self.revoke_sids(sids)
        self.store.delete(f"user:{identity_id}")
        provider, _, subject = identity_id.partition(":")
        signals.session_revoked.send(current_app._get_current_object() if _has_app() else None,  # type: ignore[attr-defined]
                                     subject=subject, provider=provider, count=count, reason=reason)
        return count

    def revoke_user(self, email_or_id: str, *, reason: str = "operator") -> int:
        """Revoke by email (every provider) or by ``provider:subject``."""
        ids = self.store.set_members(f"email:{email_or_id.lower()}") if "@" in email_or_id else {email_or_id}
        return sum(self.revoke_identity(i, reason=reason) for i in ids)


def _has_app() -> bool:
    from flask import has_app_context

    return has_app_context()


def get_state(app: Flask | None = None) -> CCSSOState:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        return app.extensions["ccsso"]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError("flask-ccsso is not initialised on this app: call CCSSO(app) or sso.init_app(app).") from None


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
    st = cfg.session.store
    if st.type == "redis":
        return RedisStore.from_url(st.url or "", prefix=st.key_prefix)
    if st.type == "sqlalchemy":
        return SQLStore.from_url(st.url or "", clock=clock, key_prefix=st.key_prefix)
    os.makedirs(app.instance_path, exist_ok=True)
    path = st.path or app.instance_path
    return SQLStore.from_url(f"sqlite:///{os.path.join(path, 'ccsso-state.sqlite')}", clock=clock,
                             key_prefix=st.key_prefix)


class CCSSO:
    """Enterprise single sign-on for a Flask app.

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
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "ccsso" in app.extensions:
            raise RuntimeError("flask-ccsso is already initialised on this app; call init_app once per app "
                               "(create one CCSSO() and call init_app in your app factory).")
        app.config.setdefault("CCSSO", None)
        app.config.setdefault("CCSSO_CONFIG_FILE", None)
        app.config.setdefault("CCSSO_URL_PREFIX", "/sso")
        app.config.setdefault("CCSSO_TRUSTED_PROXIES", 0)
        app.config.setdefault("CCSSO_LOGIN_VIEW", None)

        cfg = parse_config(_load_raw(app))
        if not cfg.providers:
            raise ConfigError("auth", "configures no provider.", "add a provider.")
        clock = self._clock or time.time
        prefix = "/" + str(app.config["CCSSO_URL_PREFIX"]).strip("/")
        if not app.secret_key:
            raise ConfigError("SECRET_KEY", "is not set; flask-ccsso signs values with it.",
                              "set app.config['SECRET_KEY'] from an environment variable.")

        # cookies: only a session id travels in them
        s = cfg.session
        app.config.update(cookie_settings(app, s))  # __Host- by default when Secure
        if not s.cookie_secure:
            log.warning("flask-ccsso: session.cookieSecure is false -- the session cookie will travel over plain "
                        "http. Use this only for local development.")

        store = self._store or _make_store(app, cfg, clock)
        iface = make_session_interface(app, s, clock)
        app.session_interface = iface
        http = self._http or requests.Session()
        http.headers.setdefault("User-Agent", "flask-ccsso")
        # built inside an app context so relative paths (SAML metadata, keys)
        # resolve against the app's root_path and fail here, at start-up
        with app.app_context():
            providers = {name: provider_class(ps.type)(ps, store=store, clock=clock, http=http)
                         for name, ps in cfg.providers.items()}
            for prov in providers.values():
                prov.startup()
        state = CCSSOState(app_name=app.name, config=cfg, providers=providers, store=store,
                           gate=SessionGate(s, store, clock), clock=clock, url_prefix=prefix, session_interface=iface)
        app.extensions["ccsso"] = state

        trusted = setting_int(app.config, "CCSSO_TRUSTED_PROXIES", 0, maximum=32)
        if trusted > 0:
            from werkzeug.middleware.proxy_fix import ProxyFix

            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted, x_proto=trusted, x_host=trusted,  # type: ignore[method-assign]
                                    x_port=trusted, x_prefix=trusted)

        from .views import bp, register_callback_aliases

        _guard_route_clashes(app, state)
        app.register_blueprint(bp, url_prefix=prefix)
        register_callback_aliases(app, state)
        app.register_error_handler(CCSSOError, _handle_error)
        app.after_request(_personal_responses_not_stored)
        app.after_request(library_security_headers)

        # the request-gate and audit modules attach themselves to the state
        for modname in _STATE_MODULES:
            try:
                mod = import_module(modname)
            except ModuleNotFoundError as exc:
                if exc.name != modname:
                    raise
                continue
            init_state = getattr(mod, "init_state", None)
            if init_state is not None:
                init_state(app, state)

    def __repr__(self) -> str:  # pragma: no cover
        return "<CCSSO>"


#: modules that attach to the state at init_app, each through a module-level
#: ``init_state(app, state)``: the session refresher and back-channel logout,
#: the bearer authenticator, the skills policy, the audit pipeline
_STATE_MODULES = ("flask_ccsso.refresh", "flask_ccsso.backchannel", "flask_ccsso.bearer", "flask_ccsso.skills",
                  "flask_ccsso.stepup", "flask_ccsso.audit_glue")


def _alias_paths(state: CCSSOState) -> dict[str, str]:
    out = {}
    for name, prov in state.providers.items():
        uri = getattr(prov.settings, "redirect_uri", None) or getattr(prov.settings, "acs_url", None)
        if uri:
            out[urlsplit(uri).path or "/"] = name
    return out


def _guard_route_clashes(app: Flask, state: CCSSOState) -> None:
    """A redirectUri path that an app route also claims would silently swallow
    either the sign-in or the page: refuse at start-up, now and for routes
    added after ``init_app``."""
    aliases = _alias_paths(state)
    if not aliases:
        return

    def check(rule: Any) -> None:
        name = aliases.get(rule.rule)
        if name is not None and rule.endpoint != f"ccsso_callback_{name}" and not rule.endpoint.startswith("ccsso."):
            prov = state.providers[name]
            key = "acsUrl" if prov.protocol == "saml" else "redirectUri"
            raise ConfigError(f"{prov.settings.path}.{key}",
                              f"its path {rule.rule!r} is also the route of view {rule.endpoint!r}.",
                              f"change {key} to {state.url_prefix}/{name}/"
                              f"{'acs' if prov.protocol == 'saml' else 'callback'} (and register that at the IdP), "
                              "or move the view.")

    for rule in app.url_map.iter_rules():
        check(rule)
    original_add = app.url_map.add

    def add(rule: Any) -> None:
        original_add(rule)
        check(rule)

    app.url_map.add = add  # type: ignore[method-assign,assignment]


def _handle_error(exc: CCSSOError) -> Response:
    state = get_state()
    if not isinstance(exc, HTTPException):
        # a ConfigError or similar at request time is a bug on our side; show
        # a plain 500 page without details, log the rest for the operator
        log.error("flask-ccsso: %s", exc)
        from werkzeug.exceptions import InternalServerError

        return error_response(InternalServerError("Single sign-on is misconfigured; the operator has been told."))
    if isinstance(exc, StepUpRequired):
        identity = getattr(g, "_ccsso_identity", None)
        if wants_json() or not identity or getattr(identity, "via", None) == "bearer":
            resp = error_response(exc, extra={"skill": exc.skill, "max_age": exc.max_age,
                                              "acr_values": list(exc.acr_values) or None})
            resp.headers["WWW-Authenticate"] = bearer_challenge(exc)
            return resp
        nxt = request.full_path if request.method == "GET" else (request.referrer and urlsplit(request.referrer).path) or "/"
        return redirect(login_url_for(identity.provider, _strip_q(nxt), state.url_prefix, exc.skill))
    if isinstance(exc, LoginRequired):
        if wants_json():
            resp = error_response(exc)
            resp.headers["WWW-Authenticate"] = bearer_challenge(exc)
            return resp
        nxt = _strip_q(request.full_path) if request.method == "GET" else "/"
        login_view = current_app.config.get("CCSSO_LOGIN_VIEW")
        from flask import url_for

        if login_view:
            return redirect(url_for(login_view, next=nxt))
        return redirect(url_for("ccsso.choose", next=nxt))
    return error_response(exc)


def _personal_responses_not_stored(response: Response) -> Response:
    """A response made for a signed-in caller (the identity was resolved and
    is someone) is personal: ``Cache-Control: no-store`` unless the view chose
    its own caching, so neither a shared proxy nor the browser's history keeps
    it after sign-out; ``Vary: Cookie`` / ``Authorization`` for caches that
    ignore ``no-store``. Costs no store call."""
    ident = g.get("_ccsso_identity")
    if ident:
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        response.vary.add("Authorization" if getattr(ident, "via", None) == "bearer" else "Cookie")
    return response


def _strip_q(path: str) -> str:
    return path.removesuffix("?")


def identity_required() -> Identity:
    """The current identity, or raise LoginRequired / SessionExpired."""
    from .identity import _get_identity  # what current_identity resolves to, without the proxy

    ident = _get_identity()
    if not ident:
        if getattr(g, "_ccsso_expired", None):
            raise SessionExpired(reason=g._ccsso_expired)
        raise LoginRequired()
    return ident  # type: ignore[return-value]
