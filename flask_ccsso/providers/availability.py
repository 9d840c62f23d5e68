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

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

#: while a provider is known to be unavailable, a sign-in there waits this
#: long (seconds) before its IdP is tried again -- the retry interval of a
#: cached document (:class:`~flask_ccsso.providers.keys.TTLDocument`), so a
#: dead IdP does not make every sign-in wait for its timeout
RECHECK_AFTER = 30.0


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
        """``what`` was fetched and is in use: it is no longer unavailable."""
        with self._lock:
            self._down.discard(what)
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

    def _publish(self, **changes: Any) -> None:
        # a new frozen value each time: readers take ``_state`` without the lock
        self._state = replace(self._state, unavailable=bool(self._down), documents=tuple(sorted(self._down)),
                              **changes)

    def snapshot(self) -> Availability:
        """The current state (an immutable value: read without a lock)."""
        return self._state


__all__ = ["RECHECK_AFTER", "Availability", "FetchStatus"]
