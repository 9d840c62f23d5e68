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
* no lost updates across workers: a write of a signed-in session first looks
  at the stored record (atomically on Redis, with ``WATCH``). A record that
  was revoked or ended meanwhile is never resurrected, and tokens a refresh in
  another worker wrote (a higher ``rev``) are adopted rather than overwritten
  -- with rotating refresh tokens an overwrite would log the person out.
* revocation leaves a small tombstone, so the next request of that browser
  is told *why* it was signed out (``revoked`` / ``refresh_failed``).
* read access to the store hands out nothing (:mod:`flask_ccsso.session_keys`):
  records live under a keyed hash of the session id, not the id, and are
  sealed (AES-GCM, bound to their store key) with a key the store never holds.
  A record that does not open -- forged, moved, or from before this scheme --
  reads as absent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from flask import Flask, Request, Response, g, has_app_context, session
from flask_session.base import ServerSideSession, ServerSideSessionInterface

from . import reasons, signals
from .exceptions import StoreUnavailable
from .identity import ANONYMOUS, AnonymousIdentity, Identity, identity_from_stored
from .session_keys import SessionKeys, is_handle

if TYPE_CHECKING:
    from .config import SessionSettings
    from .stores import SharedStore

log = logging.getLogger("flask_ccsso")

#: key of flask-ccsso's data inside the session
SESSION_KEY = "_ccsso"
#: per-browser value binding pending OIDC sign-ins to this browser
BINDING_KEY = "_ccsso_bind"
#: the one member of a stored (sealed) record
SEALED_KEY = "sealed"
#: cookie values longer than this are not session ids (not even hashed)
MAX_SID_LENGTH = 256
#: the idle deadline is recorded at least this often, as a share of idleTimeout
SLIDING_SHARE = 0.1


class JSONOnlySerializer:
    """msgspec JSON, and nothing else: no pickle fallback."""

    def __init__(self) -> None:
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(dict)

    def encode(self, session: ServerSideSession | dict[str, Any]) -> bytes:
        return self._enc.encode(dict(session))

    def decode(self, data: bytes) -> dict[str, Any]:
        return self._dec.decode(data)


class JSONFileSerializer:
    """cachelib's ``FileSystemCache`` pickles what it stores (and unpickles
    whatever file it finds); this serializer makes the embedded store JSON
    only, like the others. Anything that is not a JSON object reads as absent."""

    def __init__(self) -> None:
        self._json = JSONOnlySerializer()

    def dump(self, value: Any, f: Any) -> None:
        f.write(self._json.encode(value if isinstance(value, dict) else {}))

    def load(self, f: Any) -> Any:
        try:
            return self._json.decode(f.read())
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            log.warning("flask-ccsso: dropped an undecodable session file (not JSON)")
            return None


_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def _store_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, StoreUnavailable]
    try:
        import redis

        errs.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis extra not installed
        pass
    try:
        import sqlalchemy.exc

        errs.append(sqlalchemy.exc.OperationalError)
        errs.append(sqlalchemy.exc.InterfaceError)
        errs.append(sqlalchemy.exc.DisconnectionError)
        errs.append(sqlalchemy.exc.TimeoutError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _auth_part(data: Any) -> dict[str, Any] | None:
    d = data.get(SESSION_KEY) if isinstance(data, dict) else None
    return d if isinstance(d, dict) else None


#: the session record's schema version (``"v"``)
SCHEMA_VERSION = 1


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def valid_record(data: dict[str, Any]) -> bool:
    """Is a signed-in record of the shape this version writes? A record from
    another schema version (an upgrade, a rollback) or edited by hand must
    sign the browser out, never turn every request into a 500."""
    if data.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        return False
    if not isinstance(data.get("identity"), dict) or not _finite(data.get("created")):
        return False
    if "last_seen" in data and not _finite(data["last_seen"]):
        return False
    rev = data.get("rev", 0)
    if not isinstance(rev, int) or isinstance(rev, bool):
        return False
    tokens = data.get("tokens")
    return tokens is None or isinstance(tokens, dict)


def _rev(data: dict[str, Any]) -> int:
    rev = data.get("rev", 0)
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else 0


def reconcile(session: ServerSideSession, stored: dict[str, Any] | None) -> bool:
    """Decide whether ``session`` may be written over ``stored``; merge in place.

    * a signed-in session whose record is gone, ended or belongs to nobody
      any more was revoked (or ended by a refresh failure) while this request
      ran: it must not come back -- ``False``.
    * the stored record carries newer tokens (``rev``) written by a refresh in
      another worker: adopt them (identity, tokens, rev) and keep our
      ``last_seen`` if it is later.
    """
    mine = _auth_part(session)
    if mine is None or "identity" not in mine or getattr(session, "ccsso_fresh", False):
        return True
    theirs = _auth_part(stored)
    if theirs is None or not isinstance(theirs.get("identity"), dict) or theirs.get("ended") \
            or theirs.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        return False
    if _rev(theirs) > _rev(mine):
        for key in ("identity", "tokens", "rev", "logout"):
            if key in theirs:
                mine[key] = theirs[key]
    seen = [x for x in (mine.get("last_seen"), theirs.get("last_seen")) if _finite(x)]
    if seen:
        mine["last_seen"] = max(float(x) for x in seen if x is not None)
    return True


class CCSSOSessionMixin:
    """Mixed into a Flask-Session interface class (see :func:`make_session_interface`)."""

    serializer: Any
    key_prefix: str
    ccsso_settings: SessionSettings
    ccsso_clock: Callable[[], float]
    ccsso_keys: SessionKeys
    _errors: tuple[type[BaseException], ...]
    _unsealed_logged: float = 0.0

    def _setup_ccsso(self, settings: SessionSettings, clock: Callable[[], float], keys: SessionKeys) -> None:
        self.serializer = JSONOnlySerializer()
        self.ccsso_settings = settings
        self.ccsso_clock = clock
        self.ccsso_keys = keys
        self._errors = _store_errors()

    # store ids -------------------------------------------------------------------
    def _get_store_id(self, sid: str) -> str:
        """The store key of cookie session id ``sid``: a keyed hash, never the id."""
        return self.key_prefix + self.ccsso_keys.handle(sid)

    def handle_of(self, ref: str) -> str:
        """The store handle of ``ref``: a cookie session id, or already a handle
        (what the per-user index holds). The two cannot be confused: session
        ids are 43 URL-safe characters, handles 64 hex digits."""
        return ref if is_handle(ref) else self.ccsso_keys.handle(ref)

    def _store_id_of(self, ref: str) -> str:
        return self.key_prefix + self.handle_of(ref)

    def _session_store_id(self, session: ServerSideSession) -> str:
        """Where ``session`` lives: the handle it was found under (an old key's,
        during a key rotation), else its handle under the current key."""
        return getattr(session, "ccsso_store_id", None) or self._get_store_id(session.sid)  # type: ignore[no-any-return]

    # sealing ---------------------------------------------------------------------
    def _seal(self, data: dict[str, Any], store_id: str) -> dict[str, Any]:
        return {SEALED_KEY: self.ccsso_keys.seal(self.serializer.encode(data), store_id)}

    def _unseal(self, store_id: str, data: Any) -> dict[str, Any] | None:
        """The record sealed for ``store_id``, or ``None`` (see the module doc)."""
        if data is None:
            return None
        plain = self.ccsso_keys.open(data.get(SEALED_KEY) if isinstance(data, dict) else None, store_id)
        if plain is None:
            self._log_unsealed()
            return None
        try:
            record = self.serializer.decode(plain)
        except _DECODE_ERRORS:
            return None
        return record if isinstance(record, dict) else None

    def _log_unsealed(self) -> None:
        # once a minute per process: after an upgrade every old cookie hits this
        now = time.monotonic()
        if now - self._unsealed_logged >= 60.0:
            self._unsealed_logged = now
            log.warning("flask-ccsso: ignored a session record that is not sealed for its key (written before an "
                        "upgrade, with another SECRET_KEY / tokenEncryptionKey, or not by flask-ccsso)")

    def _decode_stored(self, store_id: str, raw: Any) -> dict[str, Any] | None:
        """Raw bytes of a record (Redis, SQL) -> the record, or ``None``."""
        if not raw:
            return None
        try:
            data = self.serializer.decode(raw if isinstance(raw, bytes) else bytes(raw))
        except _DECODE_ERRORS:
            log.warning("flask-ccsso: dropped an undecodable session (not JSON)")
            return None
        return self._unseal(store_id, data)

    def _encode_sealed(self, session: ServerSideSession | dict[str, Any], store_id: str) -> bytes:
        return self.serializer.encode(self._seal(dict(session), store_id))  # type: ignore[no-any-return]

    # reading ---------------------------------------------------------------------
    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        try:
            data = super()._retrieve_session_data(store_id)  # type: ignore[misc]
        except _DECODE_ERRORS:
            log.warning("flask-ccsso: dropped an undecodable session (not JSON)")
            return None
        return self._unseal(store_id, data)

    def _find(self, sid: str) -> tuple[str, dict[str, Any]] | None:
        """The record of cookie session id ``sid`` and where it lives. Old keys'
        handles are tried only when the current one finds nothing."""
        store_id = self._get_store_id(sid)
        data = self._retrieve_session_data(store_id)
        if data is not None:
            return store_id, data
        for handle in self.ccsso_keys.old_handles(sid):
            store_id = self.key_prefix + handle
            data = self._retrieve_session_data(store_id)
            if data is not None:
                return store_id, data
        return None

    def _new_session(self) -> ServerSideSession:
        return self.session_class(sid=self._generate_sid(self.sid_length), permanent=False)  # type: ignore[attr-defined, no-any-return]

    def open_session(self, app: Flask, request: Request) -> ServerSideSession:
        sid = request.cookies.get(self.get_cookie_name(app))  # type: ignore[attr-defined]
        if not sid or len(sid) > MAX_SID_LENGTH:
            return self._new_session()
        try:
            found = self._find(sid)
        except self._errors as exc:
            log.error("flask-ccsso: session store unreachable: %s", exc.__class__.__name__)
            s = self._new_session()
            s.ccsso_unavailable = True  # type: ignore[attr-defined]
            return s
        if found is None:
            return self._new_session()
        s = self.session_class(found[1], sid=sid)  # type: ignore[attr-defined]
        s.ccsso_store_id = found[0]
        return s  # type: ignore[no-any-return]

    # writing ---------------------------------------------------------------------
    def should_set_storage(self, app: Flask, session: ServerSideSession) -> bool:
        return bool(session.modified)

    def _ttl_for(self, session: ServerSideSession | dict[str, Any]) -> float:
        """Seconds the store keeps the record: until the nearer deadline (+5 s)."""
        data = session.get(SESSION_KEY)
        now = self.ccsso_clock()
        s = self.ccsso_settings
        if isinstance(data, dict) and data.get("ended"):
            return s.idle_timeout + 60.0  # a tombstone: long enough to tell the browser why
        if isinstance(data, dict) and "identity" in data and valid_record(data):
            deadline = min(float(data.get("created", now)) + s.absolute_timeout, idle_deadline(data, s))
            return max(1.0, deadline - now + 5)
        return 900.0  # a pre-sign-in session: only a binding value lives here

    def _raw_upsert(self, session: ServerSideSession, store_id: str) -> None:
        ttl = timedelta(seconds=self._ttl_for(session))
        sealed = self.session_class(self._seal(dict(session), store_id), sid=session.sid)  # type: ignore[attr-defined]
        super()._upsert_session(ttl, sealed, store_id)  # type: ignore[misc]

    def _guarded_upsert(self, session: ServerSideSession, store_id: str) -> bool:
        """Read, reconcile, write. Backends with transactions override this."""
        if not reconcile(session, self._retrieve_session_data(store_id)):
            return False
        self._raw_upsert(session, store_id)
        return True

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        data = _auth_part(session)
        if data is not None and "identity" in data and not getattr(session, "ccsso_fresh", False):
            if not self._guarded_upsert(session, store_id):
                log.info("flask-ccsso: not saving a session that ended meanwhile (revoked or refresh failed)")
            return
        self._raw_upsert(session, store_id)

    def _save(self, app: Flask, session: ServerSideSession, response: Response) -> None:
        """Flask-Session's ``save_session``, but at the session's own store id."""
        name = self.get_cookie_name(app)  # type: ignore[attr-defined]
        domain = self.get_cookie_domain(app)  # type: ignore[attr-defined]
        path = self.get_cookie_path(app)  # type: ignore[attr-defined]
        if session.accessed:
            response.vary.add("Cookie")
        if not session:
            if session.modified:  # emptied: forget it here and in the browser
                self._delete_session(self._session_store_id(session))  # type: ignore[attr-defined]
                response.delete_cookie(key=name, domain=domain, path=path)
                response.vary.add("Cookie")
            return
        if not self.should_set_storage(app, session):
            return
        self._upsert_session(app.permanent_session_lifetime, session, self._session_store_id(session))
        if not self.should_set_cookie(app, session):  # type: ignore[attr-defined]
            return
        response.set_cookie(name, session.sid, expires=self.get_expiration_time(app, session),  # type: ignore[attr-defined]
                            httponly=self.get_cookie_httponly(app), domain=domain, path=path,  # type: ignore[attr-defined]
                            secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))  # type: ignore[attr-defined]
        response.vary.add("Cookie")

    def save_session(self, app: Flask, session: ServerSideSession, response: Response) -> None:
        if getattr(session, "ccsso_unavailable", False):
            return
        try:
            self._save(app, session, response)
        except self._errors as exc:
            # the response was already made; it must not claim success (a
            # sign-in whose session was not stored) -- turn it into a 503
            log.error("flask-ccsso: session store unreachable while saving: %s", exc.__class__.__name__)
            err = StoreUnavailable()
            response.status_code = 503
            response.headers.pop("Location", None)
            response.headers.pop("Set-Cookie", None)
            response.headers["Retry-After"] = "5"
            response.headers["Cache-Control"] = "no-store"
            response.set_data(f"<!doctype html><title>503</title><h1>Service unavailable</h1><p>{err.description}</p>")
            response.mimetype = "text/html"

    # admin --------------------------------------------------------------------------
    def rotate(self, session: ServerSideSession) -> None:
        """New session id, old record deleted: session fixation defence."""
        old = self._session_store_id(session)
        session.sid = self._generate_sid(self.sid_length)  # type: ignore[attr-defined]
        session.ccsso_store_id = None  # type: ignore[attr-defined]
        session.modified = True
        session.ccsso_fresh = True  # type: ignore[attr-defined]
        try:
            self._delete_session(old)  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreUnavailable() from exc

    # The admin methods below take a cookie session id or a store handle (what
    # the per-user index, revocation and ``flask ccsso sessions`` work with).

    def delete_sid(self, sid: str) -> None:
        try:
            self._delete_session(self._store_id_of(sid))  # type: ignore[attr-defined]
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def read_sid(self, sid: str) -> dict[str, Any] | None:
        """The stored record of ``sid`` (``None`` if there is none)."""
        try:
            return self._retrieve_session_data(self._store_id_of(sid))
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def write_sid(self, session: ServerSideSession) -> bool:
        """Write ``session`` now (not at the end of the request), reconciling
        with the stored record. ``False`` if the session ended meanwhile."""
        try:
            store_id = self._session_store_id(session)
            if _auth_part(session) is not None and not getattr(session, "ccsso_fresh", False):
                ok = self._guarded_upsert(session, store_id)
            else:
                self._raw_upsert(session, store_id)
                ok = True
        except self._errors as exc:
            raise StoreUnavailable() from exc
        return ok

    def close(self) -> None:
        """Release the backend's connections (tests, shutdown hooks)."""
        parent = getattr(super(), "close", None)
        if parent is not None:
            parent()
            return
        client = getattr(self, "client", None)
        if client is not None and hasattr(client, "close"):
            client.close()

    def end_sid(self, sid: str, reason: str) -> bool:
        """End ``sid`` everywhere: replace the record by a tombstone naming
        ``reason`` (the next request of that browser learns why). ``False``
        when there was no live session under ``sid``."""
        try:
            store_id = self._store_id_of(sid)
            stored = self._retrieve_session_data(store_id)
            data = _auth_part(stored)
            if data is None or "identity" not in data or data.get("ended"):
                return False
            tomb = self.session_class({SESSION_KEY: {"ended": reason, "identity": data["identity"]}},  # type: ignore[attr-defined]
                                      sid=sid)
            self._raw_upsert(tomb, store_id)
            return True
        except self._errors as exc:
            raise StoreUnavailable() from exc


class _RedisWatchMixin:
    """On Redis the reconcile-and-write is one optimistic transaction."""

    client: Any

    def _guarded_upsert(self, session: ServerSideSession, store_id: str) -> bool:
        from redis.exceptions import WatchError

        for _ in range(8):
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(store_id)
                    stored = self._decode_stored(store_id, pipe.get(store_id))  # type: ignore[attr-defined]
                    if not reconcile(session, stored):
                        return False
                    ttl = int(self._ttl_for(session))  # type: ignore[attr-defined]
                    pipe.multi()
                    pipe.set(store_id, self._encode_sealed(session, store_id), ex=max(1, ttl))  # type: ignore[attr-defined]
                    pipe.execute()
                    return True
                except WatchError:
                    continue
        raise StoreUnavailable("The session store is too busy right now. Try again in a moment.")


class _FileLockMixin:
    """The embedded file store has no transactions: the reconcile-and-write
    and the tombstone write take one ``flock`` (per store directory, across
    threads and worker processes), so a revocation cannot land between a
    save's read and its write and be overwritten."""

    ccsso_lock_path: str

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.ccsso_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _guarded_upsert(self, session: ServerSideSession, store_id: str) -> bool:
        with self._write_lock():
            return super()._guarded_upsert(session, store_id)  # type: ignore[misc, no-any-return]

    def end_sid(self, sid: str, reason: str) -> bool:
        try:
            with self._write_lock():
                return super().end_sid(sid, reason)  # type: ignore[misc, no-any-return]
        except OSError as exc:
            raise StoreUnavailable() from exc


def _redis_client(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # one quick retry (a pooled socket that died with a Redis restart), never
    # redis-py's default of ten with backoff: a down store must answer 503 now
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                retry=Retry(NoBackoff(), 1), health_check_interval=30)


def session_keys(app: Flask, settings: SessionSettings) -> SessionKeys:
    """``session.tokenEncryptionKey`` (+ its fallbacks), else ``SECRET_KEY``
    (+ Flask's ``SECRET_KEY_FALLBACKS``): the current key first."""
    if settings.token_encryption_key:
        return SessionKeys([settings.token_encryption_key, *settings.token_encryption_key_fallbacks])
    return SessionKeys([app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or [])])  # type: ignore[list-item]


HOST_PREFIX = "__Host-"


def cookie_settings(app: Flask, s: SessionSettings) -> dict[str, Any]:
    """The ``SESSION_COOKIE_*`` settings. Only a session id travels in the cookie.

    ``__Host-`` (the browser then insists on ``Secure``, ``Path=/`` and no
    ``Domain``, so a sibling subdomain or a plain-http page cannot plant or
    overwrite the cookie -- session fixation, login CSRF) is used by default
    whenever the cookie can carry it: Secure, path ``/``, host-only.
    ``cookieHostPrefix: true`` forces it (and path ``/``, no domain);
    ``false`` turns it off."""
    prefix = s.cookie_host_prefix
    if prefix is None:
        path = app.config.get("SESSION_COOKIE_PATH") or app.config.get("APPLICATION_ROOT") or "/"
        prefix = s.cookie_secure and path == "/" and not app.config.get("SESSION_COOKIE_DOMAIN")
        if s.cookie_secure and not prefix:
            log.info("flask-ccsso: the session cookie has a Domain or a path other than /, so it is not named "
                     "__Host-%s (set session.cookieHostPrefix true to force it)", s.cookie_name)
    name = s.cookie_name
    if prefix and not name.startswith(HOST_PREFIX):
        name = HOST_PREFIX + name
    out: dict[str, Any] = {"SESSION_COOKIE_NAME": name, "SESSION_COOKIE_HTTPONLY": True,
                           "SESSION_COOKIE_SECURE": s.cookie_secure, "SESSION_COOKIE_SAMESITE": s.cookie_samesite,
                           "SESSION_REFRESH_EACH_REQUEST": False, "SESSION_PERMANENT": False}
    if prefix:
        out.update(SESSION_COOKIE_PATH="/", SESSION_COOKIE_DOMAIN=None)
    return out


def make_session_interface(app: Flask, settings: SessionSettings, clock: Callable[[], float]) -> ServerSideSessionInterface:
    """Build the Flask-Session interface for ``session.store``."""
    store = settings.store
    prefix = store.key_prefix + "session:"
    common = {"key_prefix": prefix, "use_signer": False, "permanent": False, "sid_length": 32}
    iface: Any
    if store.type == "redis":
        from flask_session.redis import RedisSessionInterface

        cls = type("CCSSORedisSessionInterface", (_RedisWatchMixin, CCSSOSessionMixin, RedisSessionInterface), {})
        iface = cls(app, client=_redis_client(store.url or ""), **common)
    elif store.type == "sqlalchemy":
        from .session_sql import make_sqlalchemy_interface

        iface = make_sqlalchemy_interface(app, settings, CCSSOSessionMixin, common)
    else:
        from cachelib.file import FileSystemCache
        from flask_session.cachelib import CacheLibSessionInterface

        path = store.path or os.path.join(app.instance_path, "ccsso-sessions")
        os.makedirs(path, mode=0o700, exist_ok=True)
        cls = type("CCSSOFileSessionInterface", (_FileLockMixin, CCSSOSessionMixin, CacheLibSessionInterface), {})
        cache = FileSystemCache(path, threshold=0, default_timeout=0, mode=0o600)
        cache.serializer = JSONFileSerializer()  # type: ignore[assignment]
        iface = cls(app, client=cache, **common)
        iface.ccsso_lock_path = os.path.normpath(path) + ".lock"
    iface._setup_ccsso(settings, clock, session_keys(app, settings))
    return iface  # type: ignore[no-any-return]


def sliding_write_interval(s: SessionSettings) -> float:
    """How stale the recorded activity may get before a request records it:
    ``slidingWriteInterval``, but at most :data:`SLIDING_SHARE` (10 %) of
    ``idleTimeout``. An interval at or above ``idleTimeout`` would never record
    anything -- a session active every second would still end at
    ``idleTimeout`` -- and one of half of it would end sessions up to 50 %
    early. So a session idles out at most 10 % of ``idleTimeout`` early."""
    return min(s.sliding_write_interval, s.idle_timeout * SLIDING_SHARE)


def idle_deadline(data: dict[str, Any], s: SessionSettings) -> float:
    """When the session idles out. With sliding expiration it follows the last
    *recorded* activity (recorded at most once per
    :func:`sliding_write_interval`, so a session may end up to that much
    early); without, it is fixed at sign-in + ``idleTimeout`` and never moves."""
    if s.enable_sliding_expiration:
        return float(data.get("last_seen", data.get("created", 0))) + s.idle_timeout
    return float(data.get("created", 0)) + s.idle_timeout


def absolute_deadline(data: dict[str, Any], s: SessionSettings) -> float:
    return float(data.get("created", 0)) + s.absolute_timeout


def auth_age(identity: Identity | AnonymousIdentity | None, clock: Callable[[], float] | None = None) -> float | None:
    """Seconds since the person last *authenticated* at the IdP (``auth_time``
    / SAML ``AuthnInstant``), per ``clock`` (default: the app's clock).

    ``None`` when nobody is signed in or the IdP did not say: callers that
    need freshness (``requireReauthenticationForSensitive``) must treat
    ``None`` as stale. A refresh never makes a session fresher: OIDC Core
    12.2 keeps ``auth_time`` at the original authentication.
    """
    if not identity or getattr(identity, "auth_time", None) is None:
        return None
    if clock is None:
        if has_app_context():
            from .extension import get_state

            clock = get_state().clock
        else:
            clock = time.time
    return max(0.0, clock() - float(identity.auth_time))  # type: ignore[arg-type]


def is_fresh(identity: Identity | AnonymousIdentity | None, max_age: float,
             clock: Callable[[], float] | None = None) -> bool:
    """``True`` when the person authenticated at most ``max_age`` seconds ago."""
    age = auth_age(identity, clock)
    return age is not None and age <= max_age


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
    """Reads the identity from the session and enforces the deadlines.

    The hot path: no store I/O beyond the one read Flask-Session already did,
    and no write unless the idle deadline needs recording (at most once per
    :func:`sliding_write_interval`).
    """

    def __init__(self, settings: SessionSettings, store: SharedStore, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock

    def current(self, app: Flask) -> Identity | AnonymousIdentity:
        sess = session._get_current_object()  # type: ignore[attr-defined]
        check_store(sess)
        data = sess.get(SESSION_KEY)
        if not isinstance(data, dict):
            return ANONYMOUS
        ended = data.get("ended")
        if ended:
            ident = data.get("identity")
            try:
                identity = Identity.from_dict(ident) if isinstance(ident, dict) else None
            except (KeyError, TypeError, ValueError):
                identity = None
            self.expire(app, identity, str(ended))
            return ANONYMOUS
        stored = data.get("identity")
        if stored is None and "identity" not in data:
            return ANONYMOUS
        if not valid_record(data):
            log.warning("flask-ccsso: dropped a session record of another shape or schema version")
            sess.clear()
            return ANONYMOUS
        now = self.clock()
        s = self.settings
        reason = None
        if now >= absolute_deadline(data, s):
            reason = reasons.ABSOLUTE_TIMEOUT
        elif now >= idle_deadline(data, s):
            reason = reasons.IDLE_TIMEOUT
        try:
            identity = identity_from_stored(stored)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            sess.clear()
            return ANONYMOUS
        if reason is not None:
            self.expire(app, identity, reason)
            return ANONYMOUS
        if s.enable_sliding_expiration and now - float(data.get("last_seen", 0)) >= sliding_write_interval(s):
            data["last_seen"] = now
            sess.modified = True
        return identity

    def expire(self, app: Flask, identity: Identity | None, reason: str) -> None:
        session.clear()
        g._ccsso_expired = reason
        signals.session_expired.send(app, identity=identity, provider=identity.provider if identity else None,
                                     reason=reason)

    def establish(self, app: Flask, identity: Identity, *, tokens: dict[str, Any] | None,
                  logout_state: dict[str, Any]) -> None:
        """Start a signed-in session: rotate the id, store the identity server-side.

        Every sign-in -- also a step-up round trip, or signing in as someone
        else while signed in -- gets a new session id; the old record is
        deleted and nothing of the old session but the browser binding (other
        tabs may be signing in) is kept. ``created`` is now, so
        ``absoluteTimeout`` ("this long after sign-in") counts from the
        newest sign-in: a step-up is a full re-authentication at the IdP
        (``prompt=login`` / ``ForceAuthn``, and its ``auth_time`` is checked
        to be new), which is what the absolute deadline asks for."""
        now = self.clock()
        binding = session.get(BINDING_KEY)
        app.session_interface.rotate(session)  # type: ignore[attr-defined]
        session.clear()
        if binding:  # other tabs of this browser may still be signing in
            session[BINDING_KEY] = binding
        if isinstance(tokens, dict) and "obtained_at" not in tokens:
            # the token's lifetime bounds the refresh window (refresh.py)
            tokens = {**tokens, "obtained_at": now}
        session[SESSION_KEY] = {
            "v": SCHEMA_VERSION,
            "rev": 0,
            "identity": identity.to_dict(),
            "tokens": tokens,
            "logout": logout_state,
            "created": now,
            "last_seen": now,
        }
        ttl = self.settings.absolute_timeout + 60
        # the indexes hold store handles: nothing in the store is a cookie value
        handle = app.session_interface.handle_of(session.sid)  # type: ignore[attr-defined]
        self.store.set_add(f"user:{identity.id}", handle, ttl)
        if identity.email:
            self.store.set_add(f"email:{identity.email.lower()}", identity.id, ttl)
        if identity.session_index:
            self.store.set_add(f"idpsid:{identity.provider}:{identity.session_index}", handle, ttl)

    def data(self) -> dict[str, Any] | None:
        d = session.get(SESSION_KEY)
        return d if isinstance(d, dict) else None
