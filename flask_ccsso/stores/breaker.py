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

An outage is logged by the breaker, once, not by every call it refuses
(those would flood the log with one ERROR per request): an ERROR when it
opens, at most one WARNING per ``report_interval`` while it stays open
(how many calls it refused since the last record), and a WARNING when it
closes (how long it was open, how many calls it refused). The callers that
log a failed call skip the refused ones (:func:`refused_by_breaker`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger("flask_ccsso")

#: seconds between the "still open" records of one outage
REPORT_INTERVAL = 60.0


class BreakerOpen(Exception):
    """Why a call failed without reaching the store: chained under the
    :class:`~flask_ccsso.exceptions.StoreUnavailable` for the log."""

    def __init__(self, breaker: Breaker) -> None:
        left = breaker.time_left() or 0.0
        #: seconds until the breaker lets a probe through (the 503's Retry-After)
        self.retry_after = max(1, math.ceil(left))
        super().__init__(f"circuit breaker open after {breaker.failures} consecutive store timeouts; "
                         f"calls fail at once for up to {left:.1f} s more, then one probe is tried")


class ThrottledLog:
    """One log record per ``interval`` seconds for one recurring message; the next
    one says how many were held back. For failures every request meets while a
    store is down without the breaker opening (a refused connection fails at
    once, so it never trips the breaker): the log says it once, not per request.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next = -math.inf
        self._held = 0
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless one was logged less than ``interval`` ago
        (then count it); ``True`` when it was logged."""
        now = self.clock()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            held, self._held = self._held, 0
            self._next = now + self.interval
        if held:
            msg, args = msg + " (and %d more like it in the last %ds, not logged)", (*args, held, int(self.interval))
        self.logger.log(level, msg, *args)
        return True


def refused_by_breaker(exc: BaseException) -> bool:
    """``exc`` (a :class:`~flask_ccsso.exceptions.StoreUnavailable`) is a call an
    open breaker refused: the breaker has logged the outage, the caller does not
    log the call."""
    return isinstance(exc.__cause__, BreakerOpen)


class Breaker:
    """Consecutive-failure circuit breaker (closed, open, half-open).

    Thread-safe. The closed state's :meth:`allow` and :meth:`success` read
    one attribute and take no lock, so a healthy store pays next to nothing.
    """

    def __init__(self, failures: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic, *,
                 name: str = "the store", report_interval: float = REPORT_INTERVAL) -> None:
        #: consecutive failures that open the breaker
        self.threshold = failures
        #: seconds an open breaker refuses calls before it lets a probe through
        self.cooldown = cooldown
        self._clock = clock
        #: what the log calls the store (its URL, password masked)
        self.name = name
        #: seconds between two "still open" records of one outage
        self.report_interval = report_interval
        #: the outage being logged: when the breaker opened (``None``: closed),
        #: the last record, calls refused since that record and since the opening
        self._outage_since: float | None = None
        self._reported_at = 0.0
        self._refused_unreported = 0
        self._refused_in_outage = 0
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

    def time_left(self) -> float | None:
        """Seconds until an open breaker lets a probe through (``0.0`` once one
        is due or under way); ``None`` while it is closed."""
        opened = self.opened_at
        if opened is None:
            return None
        return max(0.0, self.cooldown - (self._clock() - opened))

    def retry_after(self) -> int | None:
        """:meth:`time_left` as a ``Retry-After``: whole seconds, rounded up, at
        least 1; ``None`` while the breaker is closed (it knows no wait)."""
        left = self.time_left()
        return None if left is None else max(1, math.ceil(left))

    def allow(self) -> bool:
        """May this call reach the store? ``False``: fail it now."""
        if self.opened_at is None:
            return True
        with self._lock:
            if self.opened_at is None:
                return True
            now = self._clock()
            if not self.probing and now - self.opened_at >= self.cooldown:
                self.probing = True  # this call is the probe
                return True
            self.rejected += 1
            self._refused_in_outage += 1
            self._refused_unreported += 1
            if now - self._reported_at < self.report_interval:
                return False
            refused, self._refused_unreported, self._reported_at = self._refused_unreported, 0, now
            since = self._outage_since if self._outage_since is not None else self.opened_at
        log.warning("flask-ccsso: %s is still not answering in time: circuit breaker open for %.0f s, "
                    "%d calls refused since the last report", self.name, now - since, refused)
        return False

    def success(self) -> None:
        """The call did not wait in vain: the store answered (an error reply
        too), or failed at once (a refused connection)."""
        if self.failures or self.opened_at is not None:
            with self._lock:
                since, refused = self._outage_since, self._refused_in_outage
                self.failures = 0
                self.opened_at = None
                self.probing = False
                self._outage_since = None
            if since is not None:
                log.warning("flask-ccsso: %s no longer stalls: circuit breaker closed after %.0f s open, "
                            "%d calls refused", self.name, self._clock() - since, refused)

    def failure(self) -> None:
        """The store did not answer in time."""
        with self._lock:
            self.failures += 1
            opened = False
            if self.probing or (self.threshold and self.failures >= self.threshold):
                now = self._clock()
                if self.opened_at is None:  # (a failed probe opens it again: the same outage)
                    opened = True
                    self.trips += 1
                    self._outage_since = self._reported_at = now
                    self._refused_unreported = self._refused_in_outage = 0
                self.opened_at = now
                self.probing = False
            failures = self.failures
        if opened:
            log.error("flask-ccsso: %s did not answer in time (%d timeouts in a row): circuit breaker open, calls "
                      "fail at once (503) for %g s, then one probe is tried; refused calls are not logged one by "
                      "one (a summary at most every %g s)", self.name, failures, self.cooldown, self.report_interval)
