"""The timeout gate: the signed-in identity of a browser session, within its deadlines.

The hot path: no store I/O beyond the one read the session interface already
did, and no write unless the idle deadline needs recording (at most once per
:func:`~flask_ccsso.sessions.interface.sliding_write_interval`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, g, request, session

from .. import reasons, signals
from .._context import unproxied
from ..exceptions import StoreUnavailable
from ..identity import ANONYMOUS, AnonymousIdentity, Identity
from ..sessions.index import SessionIndex
from ..sessions.interface import CCSSOSessionInterface, current_session, sliding_write_interval
from ..sessions.record import (
    BINDING_KEY,
    SCHEMA_VERSION,
    SESSION_KEY,
    Ended,
    InvalidRecord,
    SessionRecord,
    client_of,
    load,
)

if TYPE_CHECKING:
    from ..config import SessionSettings
    from ..stores import SharedStore

log = logging.getLogger("flask_ccsso")


def browser_binding(create: bool) -> str | None:
    """The per-browser value pending OIDC sign-ins are bound to."""
    value = session.get(BINDING_KEY)
    if value is None and create:
        value = secrets.token_urlsafe(24)
        session[BINDING_KEY] = value
    return value if isinstance(value, str) else None


def check_store(s: Any) -> None:
    """Raise :class:`StoreUnavailable` (503) if this request's session could not be read."""
    if getattr(s, "unavailable", False):
        raise StoreUnavailable()


def _interface(app: Flask) -> CCSSOSessionInterface:
    iface = app.session_interface
    if not isinstance(iface, CCSSOSessionInterface):
        raise TypeError("app.session_interface is not flask-ccsso's (was it replaced after init_app?)")
    return iface


class SessionGate:
    """Reads the identity from the session and enforces the deadlines."""

    def __init__(self, settings: SessionSettings, store: SharedStore, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock

    def record(self) -> SessionRecord | None:
        """This request's live session record (``None``: nobody signed in,
        ended, or of another shape)."""
        try:
            record = load(session.get(SESSION_KEY))
        except InvalidRecord:
            return None
        return record if isinstance(record, SessionRecord) else None

    def current(self, app: Flask) -> Identity | AnonymousIdentity:
        sess = unproxied(session)
        check_store(sess)
        try:
            record = load(sess.get(SESSION_KEY))
        except InvalidRecord:
            log.warning("flask-ccsso: dropped a session record of another shape or schema version")
            sess.clear()
            return ANONYMOUS
        if isinstance(record, Ended):
            self.expire(app, record.identity, record.reason)
            return ANONYMOUS
        if record is None:
            return ANONYMOUS
        now = self.clock()
        s = self.settings
        # the deadlines inline (absolute_deadline / idle_deadline say the same): every request runs this
        created = record.created
        sliding = s.enable_sliding_expiration
        active = (record.last_seen if record.last_seen is not None else created) if sliding else created
        reason = None
        if now >= created + s.absolute_timeout:
            reason = reasons.ABSOLUTE_TIMEOUT
        elif now >= active + s.idle_timeout:
            reason = reasons.IDLE_TIMEOUT
        try:
            identity = record.person()
        except (KeyError, TypeError, ValueError):
            sess.clear()
            return ANONYMOUS
        if reason is not None:
            self.expire(app, identity, reason)
            return ANONYMOUS
        if sliding and now - (record.last_seen or 0.0) >= sliding_write_interval(s):
            dataclasses.replace(record, last_seen=now).put(sess)
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
        iface = _interface(app)
        binding = session.get(BINDING_KEY)
        old = iface.renew_id(session)
        session.clear()
        if binding:  # other tabs of this browser may still be signing in
            session[BINDING_KEY] = binding
        if isinstance(tokens, dict) and "obtained_at" not in tokens:
            # the token's lifetime bounds the refresh window (refresh.py)
            tokens = {**tokens, "obtained_at": now}
        SessionRecord(identity=identity.to_dict(), tokens=tokens, logout=logout_state, created=now,
                      last_seen=now, client=client_of(request.remote_addr, request.user_agent.string)).put(session)
        # the record, its index entries (store handles: nothing in the store is
        # a cookie value) and the old record's deletion: one batch, one round
        # trip; StoreUnavailable when it could not be stored (nothing announced yet)
        SessionIndex(iface).start(identity, current_session(), self.settings.absolute_timeout + 60, replaces=old)

    def data(self) -> dict[str, Any] | None:
        """The raw record block of this request's session (prefer :meth:`record`)."""
        d = session.get(SESSION_KEY)
        return d if isinstance(d, dict) else None


__all__ = ["SCHEMA_VERSION", "SessionGate", "browser_binding", "check_store"]
