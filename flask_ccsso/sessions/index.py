"""The session index: which sessions a person (and an IdP session) has, and revocation.

Three kinds of sets in the shared store, each holding *store handles* (a
keyed hash of the session id, never a cookie value):

* ``user:<provider>:<subject>`` -- every session of one person at one provider;
* ``email:<email>`` -- the ``provider:subject`` ids an email signed in as;
* ``idpsid:<provider>:<IdP session>`` -- the sessions an IdP session (OIDC
  ``sid``, SAML ``SessionIndex``) started.

The sets live in the session store, beside the records they name, so a
sign-in writes its record and its index entries as one batch
(:meth:`SessionIndex.start`, one round trip) and a revocation can never find
one without the other.

Revoking replaces a session's record by a tombstone
(:meth:`~flask_ccsso.sessions.interface.CCSSOSessionInterface.end_sid`), so
it ends on every worker and host and that browser's next request is told
why. Every path that ends sessions -- the API, the operator's CLI, OIDC
back-channel logout, SAML single logout, a failed refresh, sign-out -- goes
through :class:`SessionIndex`, and each takes a session out of the indexes
only *after* ending it: a store failure in between leaves the session
findable (``flask ccsso sessions list``) and revocable, never live and
unlisted.

Ordering of a revocation and a sign-in of the same person, as the store
sees them: a session whose sign-in was stored before :meth:`SessionIndex.revoke_identity`
returned is ended (also one stored while it ran -- it reads the index again
until a read finds nothing new); one stored after it returned is valid.
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
from ..stores import Batch
from .interface import SESSION_NAMESPACE
from .record import SESSION_KEY, SessionRecord, load_live

if TYPE_CHECKING:
    from ..identity import Identity
    from ..stores import SharedStore
    from .interface import CCSSOSession, CCSSOSessionInterface

log = logging.getLogger("flask_ccsso")

#: reads of one person's index a revocation makes at most: each pass ends
#: what signed in since the last one (two passes unless sign-ins race it)
REVOKE_PASSES = 16


def names_email(user: str) -> bool:
    """Does ``user`` name a person by email (every provider), not by
    ``provider:subject``? A subject may itself be an email (a SAML NameID:
    ``google:alice@example.com``), so an ``@`` alone does not tell: an email's
    local part has no ``:`` before the ``@``, an identity id does."""
    local, at, _ = user.partition("@")
    return bool(at) and ":" not in local


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
    """All revocation, over the session interface: its records, and the
    indexes in its store (:attr:`store`)."""

    def __init__(self, sessions: CCSSOSessionInterface) -> None:
        self.sessions = sessions

    @property
    def store(self) -> SharedStore:
        """The session store: records and indexes, so one batch writes both."""
        return self.sessions.store

    # -- the index ---------------------------------------------------------------
    def entries(self, batch: Batch, identity: Identity, handle: str, ttl: float) -> Batch:
        """Add the index entries of ``identity``'s session ``handle`` to ``batch``."""
        batch.set_add(user_key(identity.id), handle, ttl)
        if identity.email:
            batch.set_add(email_key(identity.email), identity.id, ttl)
        if identity.session_index:
            batch.set_add(idp_session_key(identity.provider, identity.session_index), handle, ttl)
        return batch

    def start(self, identity: Identity, session: CCSSOSession, ttl: float, *, replaces: str | None = None) -> None:
        """Store a new signed-in session (its id already rotated) -- its
        record, its index entries (kept ``ttl`` seconds) and the deletion of
        the record it ``replaces`` -- in one batch (one round trip,
        all or nothing). Raises :class:`~flask_ccsso.exceptions.StoreUnavailable`
        when it could not be stored: the sign-in must then fail, not be
        announced."""
        batch = Batch().delete(replaces) if replaces else Batch()
        self.sessions.store_now(session, self.entries(batch, identity, self.sessions.handle_of(session.sid), ttl))

    def add(self, identity: Identity, sid: str, ttl: float) -> None:
        """Index a session of ``identity`` whose record is already stored (a
        sign-in uses :meth:`start`, which writes both at once)."""
        self._write(self.entries(Batch(), identity, self.sessions.handle_of(sid), ttl))

    def _write(self, batch: Batch) -> None:
        """``batch`` in one step; every backend error (a read-only replica
        during a failover too) is :class:`~flask_ccsso.exceptions.StoreUnavailable`,
        as for the records (the session interface's one guard)."""
        self.sessions._guarded(self.store.write_many, batch)

    def _unindex(self, batch: Batch, identity: Identity, handle: str) -> Batch:
        batch.set_remove(user_key(identity.id), handle)
        if identity.session_index:
            batch.set_remove(idp_session_key(identity.provider, identity.session_index), handle)
        return batch

    def forget_session(self, identity: Identity, sid: str) -> None:
        """Drop a session that has already ended (cookie id or store handle)
        from the per-user indexes, best effort: a member left behind names a
        record that is gone, which listing and revocation skip."""
        try:
            self._write(self._unindex(Batch(), identity, self.sessions.handle_of(sid)))
        except CCSSOError:
            log.warning("flask-ccsso: could not update the session index after a session ended")

    def sign_out(self, identity: Identity, session: CCSSOSession) -> None:
        """End this browser's session at its person's request: delete its
        record and take it out of the indexes, in one batch (all or
        nothing). On a store failure this raises
        :class:`~flask_ccsso.exceptions.StoreUnavailable` and nothing
        changed: the session is still signed in, listed by ``flask ccsso
        sessions list`` and ended by ``sessions revoke`` -- the sign-out
        must then say it failed. (A backend without an atomic batch deletes
        the record first, so a failure in between leaves at worst an index
        entry naming nothing.)"""
        key = session.store_key or self.sessions.store_key(session.sid)
        handle = key[len(SESSION_NAMESPACE):]
        self._write(self._unindex(Batch().delete(key), identity, handle))

    def identity_ids(self, user: str | None = None) -> list[str]:
        """``provider:subject`` ids: all indexed ones, those of an email, or ``user`` itself."""
        if user is None:
            return sorted(k[len("user:"):] for k in self.store.keys("user:"))
        if names_email(user):
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
        sends :data:`~flask_ccsso.signals.session_revoked`.

        Every session whose sign-in was stored before this returns is ended
        -- also one stored while it runs: the index is read again after each
        pass until a read finds nothing (at most :data:`REVOKE_PASSES`). Only
        the ended sessions leave the index, never the whole set, so a
        sign-in stored after this returns stays indexed (and valid), and a
        store failure midway leaves the rest findable for the next revocation."""
        key = user_key(identity_id)
        count = 0
        for _ in range(REVOKE_PASSES):
            members = self.store.set_members(key)
            if not members:
                break
            count += self.revoke_sids(members)
            self.store.set_remove(key, *members)  # only those just ended (or already gone)
        else:
            log.warning("flask-ccsso: %s kept signing in while their sessions were revoked; "
                        "sessions that signed in during the last pass may remain (revoke again)", identity_id)
        provider, _, subject = identity_id.partition(":")
        _revoked(subject, provider, count, reason)
        return count

    def revoke_user(self, email_or_id: str, *, reason: str = "operator") -> int:
        """Revoke by email (every provider) or by ``provider:subject``."""
        ids = self.store.set_members(email_key(email_or_id)) if names_email(email_or_id) else {email_or_id}
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
