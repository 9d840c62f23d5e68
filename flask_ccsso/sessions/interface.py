"""Server-side sessions: a small Flask session interface over a :class:`~flask_ccsso.stores.SharedStore`.

Only a random session id travels in the cookie; the session lives in the
store ``session.store`` names (Redis, SQL, or the embedded SQLite file), under
a keyed hash of the id, sealed (:mod:`flask_ccsso.sessions.keys`). What the
interface guarantees:

* JSON only: a stored value that is not a JSON object holding a record
  sealed for its key reads as absent -- nothing is ever unpickled.
* the session id is rotated at sign-in (fixation).
* no write per request: a session is written only when it changed; the
  idle deadline is recorded at most once per ``slidingWriteInterval`` (by
  the timeout gate), and the store's own expiry follows the nearer deadline.
* no lost updates across workers: a signed-in session is written with the
  store's one atomic step, :meth:`~flask_ccsso.stores.SharedStore.update`
  (Redis ``WATCH``, a SQL row lock, SQLite's write lock). A record revoked or
  ended meanwhile is never resurrected, and tokens a refresh in another
  worker wrote (a higher ``rev``) are adopted, not overwritten (with
  rotating refresh tokens an overwrite would log the person out).
* store errors become :class:`~flask_ccsso.exceptions.StoreUnavailable`
  (503, fail closed), also when the response was already made.

See docs/design.md ("Why not Flask-Session's interface") for why this is not
Flask-Session any more.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from flask import Flask, Request, Response
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict, Headers
from werkzeug.wrappers import Response as BaseResponse

from .._context import unproxied
from ..exceptions import StoreUnavailable
from ..stores import Batch, Change, SharedStore, open_store
from ..stores.breaker import ThrottledLog, refused_by_breaker
from .keys import SessionKeys, is_handle
from .record import SESSION_KEY, SessionRecord, finite, load, revision, tombstone

if TYPE_CHECKING:
    from ..config import SessionSettings

log = logging.getLogger("flask_ccsso")

#: the one member of a stored (sealed) record
SEALED_KEY = "sealed"
#: cookie values longer than this are not session ids (not even hashed)
MAX_SID_LENGTH = 256
#: random bytes of a session id (43 URL-safe characters)
SID_BYTES = 32
#: where session records live in the store (``<keyPrefix>session:<handle>``)
SESSION_NAMESPACE = "session:"
#: the idle deadline is recorded at least this often, as a share of idleTimeout
SLIDING_SHARE = 0.1
#: store lifetime of a session that holds no sign-in (only a browser binding)
PRE_SIGN_IN_TTL = 900.0
#: extra store lifetime of a tombstone beyond idleTimeout (to tell the browser why)
TOMBSTONE_GRACE = 60.0

_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder(dict).decode


class CCSSOSession(CallbackDict[str, Any], SessionMixin):
    """The server-side session (``flask.session``): a dict that knows its id.

    ``store_key``: where the record was found (an old key's handle during a
    key rotation); ``fresh``: the id was just rotated (no stored record to
    reconcile with); ``unavailable``: the store could not be read;
    ``written``: the store already holds the session as it is now (the
    sign-in wrote it with its index entries, :meth:`CCSSOSessionInterface.store_now`),
    so the save only sends the cookie -- any change clears it."""

    def __init__(self, initial: Mapping[str, Any] | None = None, sid: str = "") -> None:
        def on_update(self: CCSSOSession) -> None:
            self.modified = True
            self.accessed = True
            self.written = False

        super().__init__(initial, on_update)
        self.sid = sid
        self.store_key: str | None = None
        self.fresh = False
        self.unavailable = False
        self.written = False
        self.modified = False
        self.accessed = False

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().setdefault(key, default)


def _store_errors() -> tuple[type[BaseException], ...]:
    """Every backend error that must answer 503 (not only what the stores map)."""
    errs: list[type[BaseException]] = [OSError, StoreUnavailable]
    try:
        import redis

        errs.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis extra not installed
        pass
    import sqlalchemy.exc

    errs += [sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError,
             sqlalchemy.exc.TimeoutError]
    return tuple(errs)


def reconcile(session: Mapping[str, Any], stored: Mapping[str, Any] | None) -> bool:
    """Decide whether ``session`` may be written over ``stored``; merge in place.

    * a signed-in session whose record is gone, ended or belongs to nobody
      any more was revoked (or ended by a refresh failure) while this request
      ran: it must not come back -- ``False``.
    * the stored record carries newer tokens (``rev``) written by a refresh in
      another worker: adopt them (identity, tokens, rev) and keep our
      ``last_seen`` if it is later.
    """
    mine = session.get(SESSION_KEY)
    if not isinstance(mine, dict) or "identity" not in mine or getattr(session, "fresh", False):
        return True
    theirs = stored.get(SESSION_KEY) if isinstance(stored, Mapping) else None
    if not isinstance(theirs, dict) or not isinstance(theirs.get("identity"), dict) or theirs.get("ended") \
            or theirs.get("v", 1) != 1:
        return False
    if revision(theirs) > revision(mine):
        for key in ("identity", "tokens", "rev", "logout"):
            if key in theirs:
                mine[key] = theirs[key]
    seen = [float(x) for x in (mine.get("last_seen"), theirs.get("last_seen"))
            if isinstance(x, (int, float)) and finite(x)]
    if seen:
        mine["last_seen"] = max(seen)
    return True


def sliding_write_interval(s: SessionSettings) -> float:
    """How stale the recorded activity may get before a request records it:
    ``slidingWriteInterval``, but at most :data:`SLIDING_SHARE` (10 %) of
    ``idleTimeout``. An interval at or above ``idleTimeout`` would never record
    anything -- a session active every second would still end at
    ``idleTimeout`` -- and one of half of it would end sessions up to 50 %
    early. So a session idles out at most 10 % of ``idleTimeout`` early."""
    return min(s.sliding_write_interval, s.idle_timeout * SLIDING_SHARE)


def idle_deadline(record: SessionRecord, s: SessionSettings) -> float:
    """When the session idles out. With sliding expiration it follows the last
    *recorded* activity (recorded at most once per
    :func:`sliding_write_interval`, so a session may end up to that much
    early); without, it is fixed at sign-in + ``idleTimeout`` and never moves."""
    return (record.active_at if s.enable_sliding_expiration else record.created) + s.idle_timeout


def absolute_deadline(record: SessionRecord, s: SessionSettings) -> float:
    return record.created + s.absolute_timeout


def current_session() -> CCSSOSession:
    """This request's server-side session (``flask.session``, unproxied).

    :raises TypeError: the app's session interface is not flask-ccsso's
        (it was replaced after ``init_app``).
    """
    sess = unproxied(flask_session)
    if not isinstance(sess, CCSSOSession):
        raise TypeError("flask.session is not flask-ccsso's server-side session "
                        "(was app.session_interface replaced after init_app?)")
    return sess


class CCSSOSessionInterface(SessionInterface):
    """Flask's session interface, over one :class:`~flask_ccsso.stores.SharedStore`."""

    def __init__(self, store: SharedStore, keys: SessionKeys, settings: SessionSettings,
                 clock: Callable[[], float], *, seal_prefix: str = "") -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.clock = clock
        #: "store unreachable" once a minute at most, however many requests meet it
        self._unreachable_log = ThrottledLog(log)
        #: what the record's seal is bound to besides its store key: the
        #: store's key prefix (a record moved to another deployment does not open)
        self.seal_prefix = seal_prefix
        self._errors = _store_errors()
        self._unsealed_logged = 0.0
        #: turns an already made response into the 503 for a store that failed
        #: while saving. The face layer installs one that answers JSON to API
        #: clients and the library's page to browsers, by the same rule as every
        #: other error (:func:`flask_ccsso.responses.store_unavailable_into`);
        #: this default is a plain HTML page.
        self.unavailable_answer: Callable[[BaseResponse], None] = _unavailable

    # -- store keys ------------------------------------------------------------
    def handle_of(self, ref: str) -> str:
        """The store handle of ``ref``: a cookie session id, or already a handle
        (what the per-user index holds). The two cannot be confused: session
        ids are 43 URL-safe characters, handles 64 hex digits."""
        return ref if is_handle(ref) else self.keys.handle(ref)

    def store_key(self, ref: str) -> str:
        """Where the record of ``ref`` (session id or handle) lives under the current key."""
        return SESSION_NAMESPACE + self.handle_of(ref)

    def _key_of(self, session: CCSSOSession) -> str:
        return session.store_key or self.store_key(session.sid)

    # -- sealing -------------------------------------------------------------------
    def encode(self, data: Mapping[str, Any], key: str) -> str:
        """The stored form of session ``data`` at ``key``: JSON, one sealed member."""
        sealed = self.keys.seal(_json_encode(dict(data)), self.seal_prefix + key)
        return _json_encode({SEALED_KEY: sealed}).decode()

    def decode(self, raw: str | None, key: str) -> dict[str, Any] | None:
        """The session stored at ``key``, or ``None`` (absent, not JSON, not sealed for ``key``)."""
        if not raw:
            return None
        try:
            outer = _json_decode(raw)
        except _DECODE_ERRORS:
            log.warning("flask-ccsso: dropped an undecodable session (not JSON)")
            return None
        plain = self.keys.open(outer.get(SEALED_KEY), self.seal_prefix + key)
        if plain is None:
            self._log_unsealed()
            return None
        try:
            return _json_decode(plain)
        except _DECODE_ERRORS:
            return None

    def _log_unsealed(self) -> None:
        # once a minute per process: after an upgrade every old cookie hits this
        now = time.monotonic()
        if now - self._unsealed_logged >= 60.0:
            self._unsealed_logged = now
            log.warning("flask-ccsso: ignored a session record that is not sealed for its key (written before an "
                        "upgrade, with another SECRET_KEY / tokenEncryptionKey, or not by flask-ccsso)")

    def ttl_for(self, data: Mapping[str, Any]) -> float:
        """Seconds the store keeps a session: until the nearer deadline (+5 s)."""
        s = self.settings
        block = data.get(SESSION_KEY)
        if isinstance(block, dict) and block.get("ended"):
            return s.idle_timeout + TOMBSTONE_GRACE  # a tombstone: long enough to tell the browser why
        try:
            record = load(block)
        except ValueError:
            record = None
        if isinstance(record, SessionRecord):
            deadline = min(absolute_deadline(record, s), idle_deadline(record, s))
            return max(1.0, deadline - self.clock() + 5)
        return PRE_SIGN_IN_TTL  # a pre-sign-in session: only a binding value lives here

    # -- reading -------------------------------------------------------------------
    def _find(self, sid: str) -> tuple[str, dict[str, Any]] | None:
        """The session of cookie id ``sid`` and where it lives. Old keys'
        handles are tried only when the current one finds nothing."""
        for handle in self._handles(sid):
            key = SESSION_NAMESPACE + handle
            data = self.decode(self.store.get(key), key)
            if data is not None:
                return key, data
        return None

    def _handles(self, sid: str) -> Iterator[str]:
        yield self.keys.handle(sid)
        yield from self.keys.old_handles(sid)

    def _new_session(self) -> CCSSOSession:
        return CCSSOSession(sid=secrets.token_urlsafe(SID_BYTES))

    def open_session(self, app: Flask, request: Request) -> CCSSOSession:
        sid = request.cookies.get(self.get_cookie_name(app))
        if not sid or len(sid) > MAX_SID_LENGTH:
            return self._new_session()
        try:
            found = self._find(sid)
        except self._errors as exc:
            if not refused_by_breaker(exc):  # an open breaker logs the outage itself, not each request
                self._unreachable_log.log(logging.ERROR, "flask-ccsso: session store unreachable: %s",
                                          exc.__class__.__name__)
            s = self._new_session()
            s.unavailable = True
            return s
        if found is None:
            return self._new_session()
        s = CCSSOSession(found[1], sid=sid)
        s.store_key = found[0]
        return s

    # -- writing -------------------------------------------------------------------
    def _write(self, session: CCSSOSession, key: str) -> bool:
        """Write ``session`` at ``key``. A signed-in session that was read from
        the store is reconciled with what is stored, in one atomic step;
        ``False`` if it ended meanwhile (it is then not written).

        Concurrent requests of one session each record its activity stamp
        (every request with ``slidingWriteInterval: 0``), so they race for the
        same record: the loser of an optimistic transaction (Redis ``WATCH``)
        re-reads and, after :func:`reconcile` kept the later stamp, usually
        finds the store already says everything it would write -- then it
        writes nothing and succeeds. A conflict is settled here, never taken
        for an unreachable store."""
        block = session.get(SESSION_KEY)
        if not (isinstance(block, dict) and "identity" in block) or session.fresh:
            self.store.set(key, self.encode(session, key), self.ttl_for(session))
            return True
        settled: list[bool] = []

        def decide(raw: str | None) -> Change:
            settled.clear()  # called again after a lost race
            stored = self.decode(raw, key)
            if not reconcile(session, stored):
                return None
            if stored is not None and dict(session) == stored:  # e.g. a peer recorded a later stamp
                settled.append(True)
                return None
            return self.encode(session, key), self.ttl_for(session)

        return self.store.update(key, decide) or bool(settled)

    def _save(self, app: Flask, session: CCSSOSession, response: Response) -> None:
        if not session.modified:  # the steady state: nothing to write, only say the answer depends on the cookie
            if session.accessed:
                add_vary(response, "Cookie")
            return
        add_vary(response, "Cookie")
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        if not session:  # emptied: forget it here and in the browser
            if not session.written:
                self.store.delete(self._key_of(session))
            response.delete_cookie(key=name, domain=domain, path=path)
            return
        if not session.written and not self._write(session, self._key_of(session)):
            log.info("flask-ccsso: not saving a session that ended meanwhile (revoked or refresh failed)")
        response.set_cookie(name, session.sid, expires=self.get_expiration_time(app, session),
                            httponly=self.get_cookie_httponly(app), domain=domain, path=path,
                            secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, CCSSOSession)
        if session.unavailable:
            return
        try:
            self._save(app, session, response)
        except self._errors as exc:
            # the response was already made; it must not claim success (a
            # sign-in whose session was not stored) -- turn it into a 503
            if not refused_by_breaker(exc):
                self._unreachable_log.log(logging.ERROR, "flask-ccsso: session store unreachable while saving: %s",
                                          exc.__class__.__name__)
            try:
                self.unavailable_answer(response)
            except Exception:  # the plain page below needs nothing that could fail
                log.exception("flask-ccsso: could not render the 503 answer; sending the plain one")
                _unavailable(response)

    # -- session ids -------------------------------------------------------------
    def rotate(self, session: SessionMixin) -> None:
        """New session id, old record deleted: session fixation defence."""
        self._guarded(self.store.delete, self.renew_id(session))

    def renew_id(self, session: SessionMixin) -> str:
        """Give ``session`` a new id (fixation defence) and return where its
        old record lives, for the caller to delete (:meth:`rotate`, or the
        sign-in's batch)."""
        assert isinstance(session, CCSSOSession)
        old = self._key_of(session)
        session.sid = secrets.token_urlsafe(SID_BYTES)
        session.store_key = None
        session.modified = True
        session.fresh = True
        return old

    def store_now(self, session: SessionMixin, batch: Batch) -> None:
        """Write ``session`` now, with ``batch``, as one step
        (:meth:`~flask_ccsso.stores.SharedStore.write_many`: one round trip):
        the sign-in's record, its index entries and the old record's
        deletion land together or not at all (:class:`StoreUnavailable`).
        The end of the request then only sends the cookie, unless the
        session changes again."""
        assert isinstance(session, CCSSOSession)
        key = self._key_of(session)
        self._guarded(self.store.write_many, batch.set(key, self.encode(session, key), self.ttl_for(session)))
        session.store_key = key
        session.fresh = False
        session.written = True

    # The methods below take a cookie session id or a store handle (what the
    # per-user index, revocation and ``flask ccsso sessions`` work with).

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def delete_sid(self, ref: str) -> None:
        self._guarded(self.store.delete, self.store_key(ref))

    def read_sid(self, ref: str) -> dict[str, Any] | None:
        """The stored session of ``ref`` (``None`` if there is none)."""
        key = self.store_key(ref)
        try:
            return self.decode(self.store.get(key), key)
        except self._errors as exc:
            raise StoreUnavailable() from exc

    def write_sid(self, session: SessionMixin) -> bool:
        """Write ``session`` now (not at the end of the request), reconciling
        with the stored record. ``False`` if the session ended meanwhile."""
        assert isinstance(session, CCSSOSession)
        return bool(self._guarded(self._write, session, self._key_of(session)))

    def end_sid(self, ref: str, reason: str) -> bool:
        """End ``ref`` everywhere: replace the record by a tombstone naming
        ``reason`` (the next request of that browser learns why). ``False``
        when there was no live session under ``ref``."""
        key = self.store_key(ref)

        def decide(raw: str | None) -> Change:
            stored = self.decode(raw, key)
            block = stored.get(SESSION_KEY) if stored is not None else None
            if not isinstance(block, dict) or "identity" not in block or block.get("ended"):
                return None
            tomb = {SESSION_KEY: tombstone(reason, block["identity"])}
            return self.encode(tomb, key), self.ttl_for(tomb)

        return bool(self._guarded(self.store.update, key, decide))

    def close(self) -> None:
        """Release the store's connections (tests, shutdown hooks)."""
        self.store.close()


def first_header(headers: Headers, lower_name: str) -> str | None:
    """The first value of header ``lower_name`` (lower case), or ``None``.
    ``headers.get()`` and ``in`` answer a missing header by building and
    catching an exception (werkzeug's ``BadRequestKeyError``), which costs
    more than looking through a response's few headers."""
    for key, value in headers.items():
        if key.lower() == lower_name:
            return value
    return None


def add_vary(response: BaseResponse, name: str) -> None:
    """Add ``name`` to the response's ``Vary`` header.

    ``response.vary`` parses the header into a set and writes it back on
    every change; on each protected response that was most of what saving an
    unchanged session cost. The usual cases here are no ``Vary`` yet, or one
    that already names ``name``: neither parses anything. Like
    ``response.vary``, only the first ``Vary`` header is read, and writing
    replaces it."""
    headers = response.headers
    current = first_header(headers, "vary")
    if not current:
        headers["Vary"] = name
        return
    wanted = name.lower()
    if any(part.strip().lower() in (wanted, "*") for part in current.split(",")):
        return
    headers["Vary"] = f"{current}, {name}"


def _unavailable(response: BaseResponse) -> None:
    err = StoreUnavailable()
    response.status_code = 503
    response.headers.pop("Location", None)
    response.headers.pop("Set-Cookie", None)
    response.headers["Retry-After"] = "5"
    response.headers["Cache-Control"] = "no-store"
    response.set_data(f"<!doctype html><title>503</title><h1>Service unavailable</h1><p>{err.description}</p>")
    response.mimetype = "text/html"


def session_keys(app: Flask, settings: SessionSettings) -> SessionKeys:
    """``session.tokenEncryptionKey`` (+ its fallbacks), else ``SECRET_KEY``
    (+ Flask's ``SECRET_KEY_FALLBACKS``): the current key first."""
    if settings.token_encryption_key:
        return SessionKeys([settings.token_encryption_key, *settings.token_encryption_key_fallbacks])
    secret = app.secret_key
    if not secret:
        raise ValueError("no SECRET_KEY to derive the session keys from")
    return SessionKeys([secret, *(app.config.get("SECRET_KEY_FALLBACKS") or [])])


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


def make_session_interface(app: Flask, settings: SessionSettings, clock: Callable[[], float]) -> CCSSOSessionInterface:
    """The session interface for ``session.store``. Its store is its own
    connection (pool) to that backend, apart from the shared state's; store
    TTLs run on real time (the app's clock only decides the deadlines)."""
    store = open_store(settings.store, app.instance_path)
    return CCSSOSessionInterface(store, session_keys(app, settings), settings, clock,
                                 seal_prefix=settings.store.key_prefix)
