"""The session index: which sessions a person (and an IdP session) has, and revocation.

Three kinds of sets in the shared store, each holding *store handles* (a
keyed hash of the session id, never a cookie value):

* ``user:<provider>:<subject>`` -- every session of one person at one provider;
* ``email:<email>`` -- the ``provider:subject`` ids an email signed in as;
* ``idpsid:<provider>:<IdP session>`` -- the sessions an IdP session (OIDC
  ``sid``, SAML ``SessionIndex``) started.

Revoking replaces a session's record by a tombstone
(:meth:`~flask_ccsso.sessions.interface.CCSSOSessionInterface.end_sid`), so
it ends on every worker and host and that browser's next request is told
why. Every path that ends sessions -- the API, the operator's CLI, OIDC
back-channel logout, SAML single logout, a failed refresh, sign-out -- goes
through :class:`SessionIndex`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import has_app_context

from .. import reasons, signals
from .._context import current_flask_app
from ..exceptions import CCSSOError
from .record import SESSION_KEY, SessionRecord, load_live

if TYPE_CHECKING:
    from ..identity import Identity
    from ..stores import SharedStore
    from .interface import CCSSOSessionInterface

log = logging.getLogger("flask_ccsso")


def user_key(identity_id: str) -> str:
    return f"user:{identity_id}"


def email_key(email: str) -> str:
    return f"email:{email.lower()}"


def idp_session_key(provider: str, idp_session: str) -> str:
    return f"idpsid:{provider}:{idp_session}"


@dataclass(frozen=True)
class LiveSession:
    """One live session, as :meth:`SessionIndex.sessions_of` lists it."""

    identity_id: str
    handle: str
    record: SessionRecord


class SessionIndex:
    """All revocation, over the shared store (indexes) and the session interface (records)."""

    def __init__(self, store: SharedStore, sessions: CCSSOSessionInterface) -> None:
        self.store = store
        self.sessions = sessions

    # -- the index ---------------------------------------------------------------
    def add(self, identity: Identity, sid: str, ttl: float) -> None:
        """Index a new session of ``identity`` (at sign-in)."""
        handle = self.sessions.handle_of(sid)
        self.store.set_add(user_key(identity.id), handle, ttl)
        if identity.email:
            self.store.set_add(email_key(identity.email), identity.id, ttl)
        if identity.session_index:
            self.store.set_add(idp_session_key(identity.provider, identity.session_index), handle, ttl)

    def forget_session(self, identity: Identity, sid: str) -> None:
        """Drop a session (cookie id or store handle) from the per-user
        indexes, which hold store handles (it is being ended)."""
        handle = self.sessions.handle_of(sid)
        try:
            self.store.set_remove(user_key(identity.id), handle)
            if identity.session_index:
                self.store.set_remove(idp_session_key(identity.provider, identity.session_index), handle)
        except CCSSOError:
            log.warning("flask-ccsso: could not update the session index at logout")

    def identity_ids(self, user: str | None = None) -> list[str]:
        """``provider:subject`` ids: all indexed ones, those of an email, or ``user`` itself."""
        if user is None:
            return sorted(k[len("user:"):] for k in self.store.keys("user:"))
        if "@" in user:
            return sorted(self.store.set_members(email_key(user)))
        return [user]

    def sessions_of(self, user: str | None = None) -> list[LiveSession]:
        """Live sessions: all, or of one person (email or ``provider:subject``)."""
        out = []
        for identity_id in self.identity_ids(user):
            for handle in sorted(self.store.set_members(user_key(identity_id))):
                stored = self.sessions.read_sid(handle)
                record = load_live(stored.get(SESSION_KEY) if stored is not None else None)
                if record is not None:
                    out.append(LiveSession(identity_id, handle, record))
        return out

    # -- revocation ----------------------------------------------------------------
    def end_sid(self, sid: str, reason: str) -> bool:
        """End one session (tombstone naming ``reason``); ``False`` if it was not live."""
        return self.sessions.end_sid(sid, reason)

    def revoke_sids(self, sids: Iterable[str]) -> int:
        """End these sessions (store handles, as the per-user index holds them,
        or cookie session ids) on every worker and host (effective on their
        next request, which is told ``revoked``). Returns how many were live."""
        return sum(1 for sid in sids if self.sessions.end_sid(sid, reasons.REVOKED))

    def revoke_identity(self, identity_id: str, *, reason: str = "api") -> int:
        """End every session of ``provider:subject`` on every worker and host;
        sends :data:`~flask_ccsso.signals.session_revoked`."""
        count = self.revoke_sids(self.store.set_members(user_key(identity_id)))
        self.store.delete(user_key(identity_id))
        provider, _, subject = identity_id.partition(":")
        _revoked(subject, provider, count, reason)
        return count

    def revoke_user(self, email_or_id: str, *, reason: str = "operator") -> int:
        """Revoke by email (every provider) or by ``provider:subject``."""
        ids = self.store.set_members(email_key(email_or_id)) if "@" in email_or_id else {email_or_id}
        return sum(self.revoke_identity(i, reason=reason) for i in ids)

    def revoke_at_idp(self, provider: str, subject: str | None, idp_sessions: Sequence[str] = ()) -> int:
        """End the sessions an IdP's logout names (OIDC back-channel logout,
        SAML single logout): ``subject``'s sessions at ``provider``, narrowed
        to those started by one of ``idp_sessions`` when given; without a
        subject, every session those IdP sessions started.

        An IdP session id is the IdP's word, not a secret: a logout naming one
        person never ends another person's session, and only the matched
        sessions leave the indexes (the others stay reachable by the next
        logout that names them). Sends no signal: the caller knows the
        protocol's reason. Returns how many were live."""
        mine = set(self.store.set_members(user_key(f"{provider}:{subject}"))) if subject is not None else None
        matched: dict[str, set[str]] = {}
        if idp_sessions:
            for idp_session in idp_sessions:
                key = idp_session_key(provider, idp_session)
                members = set(self.store.set_members(key))
                matched[key] = members & mine if mine is not None else members
            ended: set[str] = set().union(*matched.values())
        else:
            ended = mine or set()
        # revoke first, then leave the indexes: a store outage in between leaves
        # the sessions findable, so the IdP's retry of the same logout ends them
        count = self.revoke_sids(ended)
        for key, members in matched.items():
            if members:
                self.store.set_remove(key, *members)
        if subject is not None and ended:
            self.store.set_remove(user_key(f"{provider}:{subject}"), *ended)
        return count


def _revoked(subject: str, provider: str, count: int, reason: str) -> None:
    sender = current_flask_app() if has_app_context() else None
    signals.session_revoked.send(sender, subject=subject, provider=provider, count=count, reason=reason)
