"""Whether an IdP's published documents can be had: a provider's cheap, cached
availability.

A provider fetches what its IdP publishes -- the OIDC discovery document and
signing keys (JWKS), SAML metadata -- on demand and keeps the last good copy
(:class:`~flask_ccsso.providers.keys.TTLDocument`,
:class:`~flask_ccsso.providers.saml_metadata.MetadataSource`). Each fetch
reports here how it went, so the provider knows without any network I/O of
its own:

* when a document was last fetched successfully, and the last failure
  (the secret-free text of the :class:`~flask_ccsso.exceptions.IdPUnavailable`
  it raised, which names the URL and what failed, never a credential);
* whether it is **unavailable** right now: a document could not be fetched
  *and no cached copy serves* -- exactly when a sign-in there fails.

A failed refresh while a cached copy still serves is recorded as the last
error, but the provider stays available: sign-ins keep working on that copy.

This is per process (each worker learns from its own fetches) and costs a
lock and a few assignments per fetch. The sign-in views read it to offer a
provider's ``fallback`` providers (see docs/production.md), and an operator
page can show it per provider.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..exceptions import IdPUnavailable

log = logging.getLogger("flask_ccsso")

#: while a provider is known to be unavailable, a sign-in there waits this
#: long (seconds) before its IdP is tried again -- the retry interval of a
#: cached document (:class:`~flask_ccsso.providers.keys.TTLDocument`), so a
#: dead IdP does not make every sign-in wait for its timeout
RECHECK_AFTER = 30.0

#: what a failed :class:`Probe` records as unavailable (among :attr:`Availability.documents`)
PROBED = "reachability check"


@dataclass(frozen=True)
class Availability:
    """What a provider knows about reaching its IdP (no secrets: safe to show an operator)."""

    #: when a published document was last fetched successfully (the clock's epoch seconds)
    last_success: float | None = None
    #: the text of the last failure (URL, what failed, what to check), ``None`` when none yet
    last_error: str | None = None
    #: when that failure happened
    last_error_at: float | None = None
    #: the failure's short code (``refused``, ``dns``, ``timeout``, ``bad_answer`` ...), when known
    failure: str | None = None
    #: a document could not be fetched and no cached copy serves: a sign-in there fails now
    unavailable: bool = False
    #: which documents are unavailable (``"discovery document"``, ``"signing keys (JWKS)"``, ``"SAML metadata"``)
    documents: tuple[str, ...] = ()

    def down_within(self, now: float, seconds: float = RECHECK_AFTER) -> bool:
        """Unavailable, and learnt so no more than ``seconds`` ago (an older
        verdict is stale: the next sign-in tries the IdP again)."""
        return self.unavailable and self.last_error_at is not None and now - self.last_error_at <= seconds


class FetchStatus:
    """The recorder behind :class:`Availability`: one per provider, written by its document caches."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._state = Availability()
        self._down: set[str] = set()

    def succeeded(self, what: str) -> None:
        """``what`` was fetched and is in use: it is no longer unavailable
        (and the IdP answers, so a failed :class:`Probe` no longer counts)."""
        with self._lock:
            self._down.discard(what)
            self._down.discard(PROBED)
            self._publish(last_success=self._clock())

    def failed(self, what: str, problem: str | None, *, cached: bool, failure: str | None = None) -> None:
        """Fetching ``what`` failed (``problem``: the error's safe description);
        ``cached``: the last good copy serves on, so it is not unavailable."""
        with self._lock:
            if cached:
                self._down.discard(what)
            else:
                self._down.add(what)
            self._publish(last_error=problem or f"the {what} could not be fetched", last_error_at=self._clock(),
                          failure=failure)

    def probe_failed(self, problem: str, failure: str | None) -> None:
        """A :class:`Probe` found the IdP unreachable: unavailable by probe,
        whatever the caches still hold, until the next success."""
        with self._lock:
            self._down.add(PROBED)
            self._publish(last_error=problem, last_error_at=self._clock(), failure=failure)

    def _publish(self, **changes: Any) -> None:
        # a new frozen value each time: readers take ``_state`` without the lock
        self._state = replace(self._state, unavailable=bool(self._down), documents=tuple(sorted(self._down)),
                              **changes)

    def snapshot(self) -> Availability:
        """The current state (an immutable value: read without a lock)."""
        return self._state


class Probe:
    """An active check of whether an IdP answers *now*, bypassing the caches.

    The cached status says "up" for as long as a stale copy serves, which is
    right for offering fallbacks but would keep a ``fallbackOnly`` provider
    locked for a whole outage on a worker that fetched the documents once.
    Unlocking one (and accepting its bearer tokens) therefore asks this.
    ``check`` fetches afresh and raises :class:`IdPUnavailable` when the IdP
    cannot be had; it returns the name of the document it fetched (recorded
    as a success) or ``None`` when there is nothing to fetch.

    Single-flight: concurrent callers wait for one check and share its
    verdict, which is kept for :data:`RECHECK_AFTER` seconds -- a spammed
    break-glass URL costs at most one fetch per 30 s per worker. Only our
    server's own fetch decides, so a caller cannot make it fail.
    """

    def __init__(self, check: Callable[[], str | None], status: FetchStatus, clock: Callable[[], float]) -> None:
        self._check = check
        self._status = status
        self._clock = clock
        self._lock = threading.Lock()
        #: (verdict: the IdP is down, when it was found) -- one tuple, read without the lock
        self._last: tuple[bool, float] | None = None

    def _remembered(self) -> bool | None:
        last = self._last
        if last is not None and self._clock() - last[1] < RECHECK_AFTER:
            return last[0]
        return None

    def down(self) -> bool:
        """Whether the IdP could not be reached by a fresh fetch (at most one per :data:`RECHECK_AFTER`)."""
        verdict = self._remembered()
        if verdict is not None:
            return verdict
        with self._lock:
            verdict = self._remembered()
            if verdict is not None:
                return verdict
            try:
                what = self._check()
            except IdPUnavailable as exc:
                verdict = True
                self._status.probe_failed(exc.description or "the identity provider could not be reached",
                                          exc.extra.get("failure"))
            except Exception:  # a provider bug must not turn a sign-in into a 500, nor unlock break-glass
                log.exception("flask-ccsso: could not check whether an identity provider is reachable")
                verdict = False
            else:
                verdict = False
                if what is not None:
                    self._status.succeeded(what)
            self._last = (verdict, self._clock())
            return verdict


__all__ = ["PROBED", "RECHECK_AFTER", "Availability", "FetchStatus", "Probe"]
