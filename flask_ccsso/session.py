"""Server-side sessions and the timeout gate.

Storage is Flask-Session's (Redis for many workers and hosts, SQLAlchemy,
or an embedded file cache for one machine). What Flask-Session leaves to its
caller is done here:

* session data is JSON only -- Flask-Session 0.8 falls back to ``pickle`` when
  decoding, so anyone who can write to the store could run code in every
  worker; here undecodable data is dropped as an empty session.
* the session id is rotated at sign-in (fixation).
* absolute and idle deadlines (with sliding renewal) are enforced, and the
  store's own expiry follows the nearer deadline, so dead sessions do not pile
  up.
* no write per request: ``SESSION_REFRESH_EACH_REQUEST`` is off and the idle
  deadline is renewed at most once per ``slidingWriteInterval``.
* store errors become :class:`~flask_ccsso.exceptions.StoreUnavailable` (503,
  fail closed) instead of 500s.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

import msgspec
from flask import Flask, Request, Response, g, session
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from . import reasons, signals
from .exceptions import StoreUnavailable
from .identity import ANONYMOUS, AnonymousIdentity, Identity

if TYPE_CHECKING:
    from .config import SessionSettings
    from .stores import SharedStore

log = logging.getLogger("flask_ccsso")

#: key of flask-ccsso's data inside the session
SESSION_KEY = "_ccsso"
#: per-browser value binding pending OIDC sign-ins to this browser
BINDING_KEY = "_ccsso_bind"


class JSONOnlySerializer:
    """msgspec JSON, and nothing else: no pickle fallback."""

    def __init__(self) -> None:
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(dict)

    def encode(self, session: ServerSideSession) -> bytes:
        return self._enc.encode(dict(session))

    def decode(self, data: bytes) -> dict[str, Any]:
        return self._dec.decode(data)


class _Unreadable(Exception):
    pass


def _store_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError]
    try:
        import redis

        errs.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis extra not installed
        pass
    try:
        import sqlalchemy.exc

        errs.append(sqlalchemy.exc.OperationalError)
        errs.append(sqlalchemy.exc.InterfaceError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


class CCSSOSessionMixin:
    """Mixed into a Flask-Session interface class (see :func:`make_session_interface`)."""

    serializer: Any
    ccsso_settings: SessionSettings
    ccsso_clock: Callable[[], float]
    _errors: tuple[type[BaseException], ...]

    def _setup_ccsso(self, settings: SessionSettings, clock: Callable[[], float]) -> None:
        self.serializer = JSONOnlySerializer()
        self.ccsso_settings = settings
        self.ccsso_clock = clock
        self._errors = _store_errors()

    # reading ---------------------------------------------------------------------
    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        try:
            return super()._retrieve_session_data(store_id)  # type: ignore[misc, no-any-return]
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            log.warning("flask-ccsso: dropped an undecodable session (not JSON)")
            return None

    def open_session(self, app: Flask, request: Request) -> ServerSideSession:
        try:
            return super().open_session(app, request)  # type: ignore[misc, no-any-return]
        except self._errors as exc:
            log.error("flask-ccsso: session store unreachable: %s", exc.__class__.__name__)
            s = self.session_class(sid=self._generate_sid(self.sid_length), permanent=False)  # type: ignore[attr-defined]
            s.ccsso_unavailable = True  # type: ignore[attr-defined]
            return s  # type: ignore[no-any-return]

    # writing ---------------------------------------------------------------------
    def should_set_storage(self, app: Flask, session: ServerSideSession) -> bool:
        return bool(session.modified)

    def _ttl_for(self, session: ServerSideSession) -> float:
        data = session.get(SESSION_KEY)
        now = self.ccsso_clock()
        s = self.ccsso_settings
        if isinstance(data, dict):
            deadline = min(data.get("created", now) + s.absolute_timeout, idle_deadline(data, s))
            return max(1.0, deadline - now + 5)
        return 900.0  # a pre-sign-in session: only a binding value lives here

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        super()._upsert_session(timedelta(seconds=self._ttl_for(session)), session, store_id)  # type: ignore[misc]

    def save_session(self, app: Flask, session: ServerSideSession, response: Response) -> None:
        if getattr(session, "ccsso_unavailable", False):
            return
        try:
            super().save_session(app, session, response)  # type: ignore[misc]
        except self._errors as exc:
            # the response was already made; it must not claim success (a
            # sign-in whose session was not stored) -- turn it into a 503
            log.error("flask-ccsso: session store unreachable while saving: %s", exc.__class__.__name__)
            err = StoreUnavailable()
            response.status_code = 503
            response.headers.pop("Location", None)
            response.headers.pop("Set-Cookie", None)
            response.headers["Retry-After"] = "5"
            response.set_data(f"<!doctype html><title>503</title><h1>Service unavailable</h1><p>{err.description}</p>")
            response.mimetype = "text/html"

    # admin --------------------------------------------------------------------------
    def rotate(self, session: ServerSideSession) -> None:
        """New session id, old record deleted: session fixation defence."""
        old = session.sid
        session.sid = self._generate_sid(self.sid_length)  # type: ignore[attr-defined]
        session.modified = True
        try:
            self._delete_session(self._get_store_id(old))  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def delete_sid(self, sid: str) -> None:
        try:
            self._delete_session(self._get_store_id(sid))  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def read_sid(self, sid: str) -> dict[str, Any] | None:
        try:
            return self._retrieve_session_data(self._get_store_id(sid))  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreUnavailable() from exc


def make_session_interface(app: Flask, settings: SessionSettings, clock: Callable[[], float]) -> ServerSideSessionInterface:
    """Build the Flask-Session interface for ``session.store``."""
    store = settings.store
    prefix = store.key_prefix + "session:"
    common = dict(key_prefix=prefix, use_signer=False, permanent=False, sid_length=32)
    iface: Any
    if store.type == "redis":
        import redis
        from flask_session.redis import RedisSessionInterface

        cls = type("CCSSORedisSessionInterface", (CCSSOSessionMixin, RedisSessionInterface), {})
        client = redis.Redis.from_url(store.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        iface = cls(app, client=client, **common)
    elif store.type == "sqlalchemy":
        from .session_sql import make_sqlalchemy_interface

        iface = make_sqlalchemy_interface(app, settings, CCSSOSessionMixin, common)
    else:
        from cachelib.file import FileSystemCache
        from flask_session.cachelib import CacheLibSessionInterface

        path = store.path or os.path.join(app.instance_path, "ccsso-sessions")
        os.makedirs(path, mode=0o700, exist_ok=True)
        cls = type("CCSSOFileSessionInterface", (CCSSOSessionMixin, CacheLibSessionInterface), {})
        iface = cls(app, client=FileSystemCache(path, threshold=0, default_timeout=0, mode=0o600), **common)
    iface._setup_ccsso(settings, clock)
    return iface  # type: ignore[no-any-return]


def idle_deadline(data: dict[str, Any], s: SessionSettings) -> float:
    if s.enable_sliding_expiration:
        return float(data.get("last_seen", data.get("created", 0))) + s.idle_timeout
    return float(data.get("created", 0)) + s.idle_timeout


def browser_binding(create: bool) -> str | None:
    """The per-browser value pending OIDC sign-ins are bound to."""
    value = session.get(BINDING_KEY)
    if value is None and create:
        value = secrets.token_urlsafe(24)
        session[BINDING_KEY] = value
    return value if isinstance(value, str) else None


def check_store(s: Any) -> None:
    if getattr(s, "ccsso_unavailable", False):
        raise StoreUnavailable()


class SessionGate:
    """Reads the identity from the session and enforces the deadlines."""

    def __init__(self, settings: SessionSettings, store: SharedStore, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock

    def current(self, app: Flask) -> Identity | AnonymousIdentity:
        check_store(session)
        data = session.get(SESSION_KEY)
        if not isinstance(data, dict) or "identity" not in data:
            return ANONYMOUS
        now = self.clock()
        s = self.settings
        reason = None
        if now >= float(data.get("created", 0)) + s.absolute_timeout:
            reason = reasons.ABSOLUTE_TIMEOUT
        elif now >= idle_deadline(data, s):
            reason = reasons.IDLE_TIMEOUT
        try:
            identity = Identity.from_dict(data["identity"])
        except (KeyError, TypeError, ValueError):
            session.clear()
            return ANONYMOUS
        if reason is not None:
            self.expire(app, identity, reason)
            return ANONYMOUS
        if s.enable_sliding_expiration and now - float(data.get("last_seen", 0)) >= s.sliding_write_interval:
            data["last_seen"] = now
            session.modified = True
        return identity

    def expire(self, app: Flask, identity: Identity | None, reason: str) -> None:
        session.clear()
        g._ccsso_expired = reason
        signals.session_expired.send(app, identity=identity, provider=identity.provider if identity else None,
                                     reason=reason)

    def establish(self, app: Flask, identity: Identity, *, tokens: dict[str, Any] | None,
                  logout_state: dict[str, Any]) -> None:
        """Start a signed-in session: rotate the id, store the identity server-side."""
        now = self.clock()
        binding = session.get(BINDING_KEY)
        app.session_interface.rotate(session)  # type: ignore[attr-defined]
        session.clear()
        if binding:  # other tabs of this browser may still be signing in
            session[BINDING_KEY] = binding
        session[SESSION_KEY] = {
            "v": 1,
            "identity": identity.to_dict(),
            "tokens": tokens,
            "logout": logout_state,
            "created": now,
            "last_seen": now,
        }
        ttl = self.settings.absolute_timeout + 60
        self.store.set_add(f"user:{identity.id}", session.sid, ttl)
        if identity.email:
            self.store.set_add(f"email:{identity.email.lower()}", identity.id, ttl)
        if identity.session_index:
            self.store.set_add(f"idpsid:{identity.provider}:{identity.session_index}", session.sid, ttl)

    def data(self) -> dict[str, Any] | None:
        d = session.get(SESSION_KEY)
        return d if isinstance(d, dict) else None
