"""Single-flight token refresh (``session.refreshWindow``).

When the session's access token expires within ``refreshWindow`` seconds
(per the extension's clock; a token is used at least ``MIN_TOKEN_USE`` s,
or half its lifetime, first -- so tokens that live no longer than the window
are not refreshed on every request), it is refreshed once -- once across threads,
processes and hosts:

1. the request takes ``refresh:<sid>`` in the shared store (the lock is
   renewed while the IdP call runs, so a slow IdP does not let a second
   refresh start);
2. the winner re-reads the stored record first (a peer may have just
   finished), calls the token endpoint, and writes the new tokens into the
   session record *before* releasing the lock;
3. the others wait briefly, then re-read the record and take the new tokens
   over. So a rotating refresh token is spent exactly once and nobody is
   logged out by a race.

Outcomes:

* the IdP refuses (``invalid_grant``: revoked, user disabled) -- the session
  ends everywhere (a tombstone with reason ``refresh_failed``),
  ``session_expired`` is sent, and the request continues signed out;
* the IdP is unreachable -- the session is kept while the access token is
  still valid, and for ``session.outageGrace`` seconds (default 3600) after it
  has expired: so an IdP outage does not sign out everyone within one token
  lifetime. Those requests are *degraded*: :func:`current_outage_grace
  <flask_ccsso.gate.current.current_outage_grace>` says so (the app's access
  token is stale), a throttled WARNING (once a minute per worker and provider)
  says so in the log, and nothing is written per request -- the back-off marker
  lets one request across all workers try the IdP again every :data:`BACKOFF`
  seconds. Past the grace (or at once with ``outageGrace: 0``) the request
  fails closed (503, ``idp_unavailable``); the session survives either way and
  refreshes when the IdP is back. A refusal ends the session, grace or not;
* a new ID token -- the stored identity is rebuilt from it (a person removed
  from a group loses the skill at the next refresh); ``token_refreshed`` is
  sent.

The hot path costs nothing: outside the window this is one comparison.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import g, session

from .. import reasons, signals
from .._context import current_flask_app
from ..exceptions import AuthenticationFailed, CCSSOError, IdPUnavailable, StoreUnavailable
from ..identity import ANONYMOUS, AnonymousIdentity, Identity
from ..sessions.interface import current_session
from ..sessions.record import SESSION_KEY, load_live, revision
from ..stores.breaker import ThrottledLog

if TYPE_CHECKING:
    from ..state import CCSSOState

log = logging.getLogger("flask_ccsso")

#: how often a waiting request re-reads the session record (seconds, real time)
POLL_INTERVAL = 0.05
#: after the IdP was unreachable, wait this long (store TTL) before trying again
#: while the access token is still valid
BACKOFF = 15.0
#: a new access token is used at least this long (or half its lifetime, if
#: shorter) before the next refresh, whatever ``refreshWindow`` says
MIN_TOKEN_USE = 60.0
#: the ``g`` attribute of a degraded request (see :func:`current_outage_grace
#: <flask_ccsso.gate.current.current_outage_grace>`)
G_OUTAGE_GRACE = "_ccsso_outage_grace"


@dataclass(frozen=True)
class OutageGrace:
    """This request's session is served on an expired access token: the
    identity provider could not renew it (unreachable, not a refusal) and the
    token expired less than ``session.outageGrace`` seconds ago.

    Times are the extension's clock (epoch seconds). An app that calls APIs
    with the person's access token should expect them to refuse it, and may
    say that the sign-in cannot be renewed right now.
    """

    #: the configured name of the provider that could not be reached
    provider: str
    #: when the session's access token expired (it is stale now)
    token_expired_at: float
    #: when the grace ends: from then on the session's requests answer 503
    #: until the provider is back
    grace_ends_at: float


#: one throttled log per provider object (so per app and per worker): an outage
#: is said once a minute, not once per request of every signed-in person
_outage_logs: weakref.WeakKeyDictionary[Any, ThrottledLog] = weakref.WeakKeyDictionary()
_outage_logs_lock = threading.Lock()


def _outage_log(provider: Any) -> ThrottledLog:
    with _outage_logs_lock:
        throttled = _outage_logs.get(provider)
        if throttled is None:
            throttled = _outage_logs[provider] = ThrottledLog(log)
        return throttled


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _expires_at(data: dict[str, Any]) -> float | None:
    tokens = data.get("tokens")
    if not isinstance(tokens, dict) or not tokens.get("refresh_token"):
        return None
    return _number(tokens.get("expires_at"))


def _window(data: dict[str, Any], expires_at: float, configured: float) -> float:
    """``refreshWindow``, but a token is used for at least :data:`MIN_TOKEN_USE`
    seconds (or half its lifetime, when that is shorter) before it is refreshed
    -- when its lifetime (from ``obtained_at``) is known. An IdP whose access
    tokens live no longer than the window (Keycloak's default is 300 s, like the
    default window) would otherwise be asked for new tokens on every request."""
    tokens = data.get("tokens")
    obtained = _number(tokens.get("obtained_at")) if isinstance(tokens, dict) else None
    if obtained is None or expires_at < obtained:
        return configured
    lifetime = expires_at - obtained
    return min(configured, lifetime - min(MIN_TOKEN_USE, lifetime / 2))


def refresh_if_needed(state: CCSSOState, identity: Identity) -> Identity | AnonymousIdentity:
    """``state.refresher``: called by :func:`~flask_ccsso.gate.current.load_identity`
    with the session's identity."""
    if identity.via != "session":
        return identity
    data = state.gate.data()
    if data is None:
        return identity
    expires_at = _expires_at(data)
    if expires_at is None:
        return identity
    left = expires_at - state.clock()
    configured = state.config.session.refresh_window
    # the hot path: outside refreshWindow, and so outside the narrower window
    # _window() may make of it, there is nothing more to work out
    if left > configured or left > _window(data, expires_at, configured):
        return identity
    provider = state.providers.get(identity.provider)
    if provider is None or not hasattr(provider, "refresh"):
        return identity
    return _SingleFlight(state, identity, provider, data, expires_at).run()


class _LockRenewer:
    """Keeps extending a store lock from a background thread until stopped."""

    def __init__(self, state: CCSSOState, name: str, token: str, ttl: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(state, name, token, ttl), daemon=True,
                                        name="ccsso-refresh-lock")

    def _loop(self, state: CCSSOState, name: str, token: str, ttl: float) -> None:
        while not self._stop.wait(ttl / 3):
            try:
                if not state.store.extend_lock(name, token, ttl):
                    return
            except CCSSOError:
                return

    def __enter__(self) -> _LockRenewer:  # noqa: PYI034 - private helper, never subclassed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class _SingleFlight:
    def __init__(self, state: CCSSOState, identity: Identity, provider: Any, data: dict[str, Any],
                 expires_at: float) -> None:
        self.state = state
        self.identity = identity
        self.provider = provider
        self.data = data
        self.expires_at = expires_at
        self.rev = revision(data)
        # the store handle, not the cookie value: lock names are store keys
        self.sid: str = state.session_interface.handle_of(current_session().sid)
        self.lock_name = f"refresh:{self.sid}"
        self.backoff_key = f"refresh-backoff:{self.sid}"
        self.ttl = state.config.session.refresh_lock_timeout
        self.app = current_flask_app()

    # ---------------------------------------------------------------- outcomes
    def _adopt(self, stored: dict[str, Any] | None) -> Identity | AnonymousIdentity | None:
        """Take over what a peer wrote. ``None``: nothing new yet."""
        block = stored.get(SESSION_KEY) if isinstance(stored, dict) else None
        theirs = load_live(block)
        if theirs is None:
            # ended by the peer (refresh failed) or revoked meanwhile
            reason = block.get("ended") if isinstance(block, dict) and block.get("ended") else reasons.REFRESH_FAILED
            self.state.gate.expire(self.app, self.identity, str(reason))
            return ANONYMOUS
        if theirs.rev <= self.rev:
            return None
        self.data.update(identity=theirs.identity, tokens=theirs.tokens, rev=theirs.rev, logout=theirs.logout)
        # the store already holds this; our end-of-request write (if any) reconciles
        return Identity.from_dict(self.data["identity"])

    def _still_valid(self) -> bool:
        return self.state.clock() < self.expires_at

    def _kept_while_down(self, what: str) -> Identity | None:
        """The identity to serve while the IdP cannot renew the token: the
        token is still valid, or it expired less than ``outageGrace`` ago
        (then the request is marked degraded and the outage logged, throttled).
        ``None``: past the grace, fail closed. Writes nothing to the store."""
        now = self.state.clock()
        if now < self.expires_at:
            return self.identity
        grace_ends_at = self.expires_at + self.state.config.session.outage_grace
        if now >= grace_ends_at:
            return None
        setattr(g, G_OUTAGE_GRACE, OutageGrace(self.identity.provider, self.expires_at, grace_ends_at))
        _outage_log(self.provider).log(
            logging.WARNING, "flask-ccsso: identity provider %r cannot renew expired access tokens (%s); their "
            "sessions are served for up to %gs past expiry (session.outageGrace), then answer 503 until it is back",
            self.identity.provider, what, self.state.config.session.outage_grace)
        return self.identity

    def _unavailable(self, what: str) -> Identity:
        """IdP or peer could not deliver: keep a still-valid token or one within
        the outage grace, else fail closed."""
        if self._still_valid():
            log.warning("flask-ccsso: token refresh postponed (%s); the access token is still valid", what)
        kept = self._kept_while_down(what)
        if kept is not None:
            return kept
        raise IdPUnavailable("Your sign-in could not be renewed because the identity provider is not reachable. "
                             "Try again in a moment.", reason=reasons.IDP_UNAVAILABLE)

    def _backing_off(self) -> Identity | None:
        """The IdP was unreachable a moment ago (the marker lives :data:`BACKOFF`
        s, for every worker): do not hammer it, serve what
        :meth:`_kept_while_down` allows. ``None``: try the IdP."""
        if self.state.store.get(self.backoff_key) is None:
            return None
        return self._kept_while_down("the identity provider was not reachable; it is retried every "
                                     f"{BACKOFF:g}s")

    # ---------------------------------------------------------------- protocol
    def run(self) -> Identity | AnonymousIdentity:
        store = self.state.store
        kept = self._backing_off()
        if kept is not None:
            return kept
        deadline = time.monotonic() + self.ttl
        while True:
            token = store.acquire_lock(self.lock_name, self.ttl)
            if token is not None:
                try:
                    return self._as_winner(token)
                finally:
                    try:
                        store.release_lock(self.lock_name, token)
                    except StoreUnavailable:
                        log.warning("flask-ccsso: could not release the refresh lock (it expires by itself)")
            # a peer is refreshing: wait for its result, re-reading the record
            while True:
                if time.monotonic() >= deadline:
                    return self._unavailable("another worker's refresh did not finish in time")
                time.sleep(POLL_INTERVAL)
                adopted = self._adopt(self.state.session_interface.read_sid(self.sid))
                if adopted is not None:
                    return adopted
                if store.get("lock:" + self.lock_name) is None:
                    break  # the peer finished without new tokens (IdP down): look again ourselves

    def _as_winner(self, token: str) -> Identity | AnonymousIdentity:
        # a peer may have finished between our read and our lock
        adopted = self._adopt(self.state.session_interface.read_sid(self.sid))
        if adopted is not None:
            return adopted
        kept = self._backing_off()
        if kept is not None:
            return kept
        with _LockRenewer(self.state, self.lock_name, token, self.ttl):
            try:
                new_tokens, new_identity = self.provider.refresh(self.data.get("tokens") or {})
            except IdPUnavailable:
                self.state.store.set(self.backoff_key, "1", BACKOFF)
                return self._unavailable("the identity provider is not reachable")
            except (AuthenticationFailed, CCSSOError) as exc:
                log.info("flask-ccsso: token refresh refused (%s); ending the session", exc.reason)
                self.state.session_interface.end_sid(self.sid, reasons.REFRESH_FAILED)
                self.state.forget_session(self.identity, self.sid)
                self.state.gate.expire(self.app, self.identity, reasons.REFRESH_FAILED)
                return ANONYMOUS
        identity = self._merge_identity(new_identity, new_tokens)
        new_tokens = dict(new_tokens)
        new_tokens["obtained_at"] = self.state.clock()
        self.data["tokens"] = new_tokens
        self.data["identity"] = identity.to_dict()
        self.data["rev"] = self.rev + 1
        session.modified = True
        if not self.state.session_interface.write_sid(session):
            # revoked while we were at the IdP
            self.state.gate.expire(self.app, self.identity, reasons.REVOKED)
            return ANONYMOUS
        session.modified = False  # written; a later change in this request writes again
        signals.token_refreshed.send(self.app, identity=identity, provider=identity.provider,
                                     expires_at=new_tokens.get("expires_at"))
        return identity

    def _merge_identity(self, new: Identity | None, tokens: dict[str, Any]) -> Identity:
        """The refreshed identity keeps what a refresh cannot tell: the IdP
        session (``sid``) and, per OIDC Core 12.2, the original ``auth_time``."""
        old = self.identity
        if new is None:
            scope = tokens.get("scope")
            if not scope:
                return old
            d = old.to_dict()
            d["scopes"] = sorted(self.provider.granted_scopes(tokens))
            return Identity.from_dict(d)
        d = new.to_dict()
        if d.get("session_index") is None:
            d["session_index"] = old.session_index
        if d.get("auth_time") is None:
            d["auth_time"] = old.auth_time
        return Identity.from_dict(d)


__all__ = ["OutageGrace", "refresh_if_needed"]
