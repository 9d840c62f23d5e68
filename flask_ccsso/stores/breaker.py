"""A circuit breaker: stop waiting on a store that has stopped answering.

A stalled store (the server accepts connections but never replies: a
paused process, a full network buffer, a partition that drops packets)
costs every request a full socket timeout before its 503. With a few sync
workers that is the whole site waiting. The breaker counts consecutive
timeouts of the store (a refused connection fails at once by itself and
does not count); after ``failures`` of them it *opens*, and calls
fail at once (:class:`~flask_ccsso.exceptions.StoreUnavailable`, no
connection attempt, no command sent) for ``cooldown`` seconds. Then it is
*half-open*: exactly one call goes through as a probe while the others
keep failing fast; the probe's success closes the breaker, its failure
opens it for another ``cooldown``.

Each process keeps its own breaker (no shared state to reach while the
store itself is unreachable).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class BreakerOpen(Exception):
    """Why a call failed without reaching the store: chained under the
    :class:`~flask_ccsso.exceptions.StoreUnavailable` for the log."""

    def __init__(self, breaker: Breaker) -> None:
        opened = breaker.opened_at
        left = 0.0 if opened is None else max(0.0, breaker.cooldown - (breaker._clock() - opened))
        #: seconds until the breaker lets a probe through (the 503's Retry-After)
        self.retry_after = max(1, math.ceil(left))
        super().__init__(f"circuit breaker open after {breaker.failures} consecutive store timeouts; "
                         f"calls fail at once for up to {left:.1f} s more, then one probe is tried")


class Breaker:
    """Consecutive-failure circuit breaker (closed, open, half-open).

    Thread-safe. The closed state's :meth:`allow` and :meth:`success` read
    one attribute and take no lock, so a healthy store pays next to nothing.
    """

    def __init__(self, failures: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        #: consecutive failures that open the breaker
        self.threshold = failures
        #: seconds an open breaker refuses calls before it lets a probe through
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        #: consecutive failures so far (reset by any success)
        self.failures = 0
        #: when the breaker last opened (``None``: closed)
        self.opened_at: float | None = None
        #: a half-open probe is under way
        self.probing = False
        #: calls refused without touching the store, since the process started
        self.rejected = 0
        #: times the breaker opened, since the process started
        self.trips = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (a probe is due or under way)."""
        if self.opened_at is None:
            return "closed"
        if self.probing or self._clock() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May this call reach the store? ``False``: fail it now."""
        if self.opened_at is None:
            return True
        with self._lock:
            if self.opened_at is None:
                return True
            if not self.probing and self._clock() - self.opened_at >= self.cooldown:
                self.probing = True  # this call is the probe
                return True
            self.rejected += 1
            return False

    def success(self) -> None:
        """The call did not wait in vain: the store answered (an error reply
        too), or failed at once (a refused connection)."""
        if self.failures or self.opened_at is not None:
            with self._lock:
                self.failures = 0
                self.opened_at = None
                self.probing = False

    def failure(self) -> None:
        """The store did not answer in time."""
        with self._lock:
            self.failures += 1
            if self.probing or (self.threshold and self.failures >= self.threshold):
                if self.opened_at is None:
                    self.trips += 1
                self.opened_at = self._clock()
                self.probing = False
